"""Decode throughput per sampler and backend (``vidssl data bench``, ``benchmarks/``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vidssl.data.decoders import VideoReader
from vidssl.data.records import VideoRecord
from vidssl.data.samplers import (
    MinimalOffsetClipSampler,
    MLFOWindowSampler,
    RandomClipsSampler,
    SeCoTripletSampler,
    SegmentTupleSampler,
    UniformClipSampler,
    UniformFrameSampler,
)


def default_samplers() -> dict[str, object]:
    """The samplers of the four papers at their published settings (and evaluation)."""
    return {
        "seco_triplet": SeCoTripletSampler(),
        "vclr_tuples_n3": SegmentTupleSampler(3),
        "corp_4x16_d2": MinimalOffsetClipSampler(4, 16, 2),
        "simclr_2x16_d2": RandomClipsSampler(2, 16, 2),
        "mlfo_window32": MLFOWindowSampler(),
        "eval_30_frames": UniformFrameSampler(30),
        "eval_10x16_clips": UniformClipSampler(10, 16, 1),
    }


@dataclass
class BenchRow:
    backend: str
    sampler: str
    samples: int
    frames: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else float("inf")

    @property
    def ms_per_sample(self) -> float:
        return 1000 * self.seconds / max(self.samples, 1)


def bench_sampler(records: list[VideoRecord], opener: Callable[[VideoRecord], VideoReader],
                  sampler: object | None, backend: str, name: str, seed: int = 0) -> BenchRow:
    """Open, plan and decode one sample per record. ``sampler=None`` decodes every frame."""
    frames = 0
    start = time.perf_counter()
    for i, record in enumerate(records):
        reader = opener(record)
        try:
            if sampler is None:
                wanted = list(range(reader.num_frames))
            else:
                rng = np.random.default_rng([seed, i])
                wanted = sampler.plan(reader.num_frames, rng).all_indices  # type: ignore[attr-defined]
            frames += len(reader.get_frames(wanted))
        finally:
            reader.close()
    return BenchRow(backend, name, len(records), frames, time.perf_counter() - start)


def render_table(rows: list[BenchRow], full: dict[str, BenchRow]) -> str:
    """Markdown table; ``speedup`` compares with decoding each whole video for the same samples."""
    out = ["| backend | sampler | frames/sample | ms/sample | frames/s | full-decode ms/video | speed-up |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = full.get(r.backend)
        full_ms = f.ms_per_sample if f else float("nan")
        out.append(f"| {r.backend} | {r.sampler} | {r.frames / max(r.samples, 1):.1f} | "
                   f"{r.ms_per_sample:.1f} | {r.frames_per_s:.0f} | {full_ms:.1f} | "
                   f"{full_ms / r.ms_per_sample:.1f}x |")
    return "\n".join(out)
