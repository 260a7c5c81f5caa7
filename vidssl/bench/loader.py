"""``vidssl bench loader``: what one loader worker delivers for each method at its paper setting,
on Kinetics-like videos as downloaded, as ``vidssl data prepare`` writes them, and as frame folders.

Generated videos: ``seconds`` at 25 fps, 640x360, H.264 with a key frame every 250 frames (as
YouTube-sourced Kinetics files typically are): a wide textured scene panned and zoomed, with
objects crossing it and sensor noise. Prepared: short side 320, key frame every 12 frames. Frames: JPEG folders at
short side 320. For each method's paper config (its sampler, views and augmentation at its paper
size; the clip methods also at 112 px) and each format, one process on one thread decodes and
augments ``samples`` samples through the training dataset (``build_dataset``): the decode time is
``read_sample`` alone, the augmentation time the rest. ``workers per H100`` divides the samples/s an
H100 consumes (the model steps/s of ``docs/results/speed_h100_*.md`` times the batch) by one
worker's samples/s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidssl.data.dataset import read_sample
from vidssl.data.encode import write_video
from vidssl.data.prepare import PrepareOptions, prepare_dataset
from vidssl.engine.config import load_config
from vidssl.engine.train import build_dataset

PAPER_CONFIGS = {"seco": "seco_kinetics400", "moco": "moco_kinetics400", "vclr": "vclr_kinetics400",
                 "corp_f": "corp_f_kinetics400", "corp_m": "corp_m_ssv2", "simclr": "simclr_kinetics400",
                 "mlfo": "mlfo_kinetics400"}
CLIP_METHODS = ("corp_f", "corp_m", "simclr", "mlfo")
# samples/s one H100 consumes (model steps/s x batch, bf16, channels-last; docs/results/speed_h100_scale.md
# for the frame methods at ResNet-50 224 px and MLFO at R3D-18 batch 32, speed_h100_r3d18_112px_bf16_cl.md
# for CORP and SimCLR at R3D-18 112 px batch 16)
H100_SAMPLES_PER_S = {"seco": 23.03 * 64, "moco": 31.40 * 64, "vclr": 12.16 * 64, "corp_f": 41.04 * 16,
                      "corp_m": 23.67 * 16, "simclr": 41.91 * 16, "mlfo": 14.98 * 32}


def kinetics_like(out: Path, count: int, seconds: float = 10.0, fps: float = 25.0, size: tuple[int, int] = (640, 360),
                  gop: int = 250, seed: int = 0) -> Path:
    """``count`` videos of a panned, zoomed textured scene with objects crossing it, and sensor noise."""
    out.mkdir(parents=True, exist_ok=True)
    w, h = size
    frames = round(seconds * fps)
    for k in range(count):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        coarse = torch.rand(1, 3, 12, 20, generator=g) * 255
        scene = F.interpolate(coarse, size=(2 * h, 2 * w), mode="bicubic", align_corners=False)
        scene = scene + 30 * torch.rand(1, 3, 2 * h, 2 * w, generator=g)  # fine texture
        video = torch.empty(frames, 3, h, w, dtype=torch.uint8)
        blobs = torch.rand(3, 5, generator=g)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for t in range(frames):
            u = t / max(frames - 1, 1)
            zoom = 1 + 0.3 * u
            ch, cw = int(h * zoom), int(w * zoom)
            top, left = int(u * (2 * h - ch)), int((1 - u) * (2 * w - cw) * 0.8)
            view = F.interpolate(scene[:, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                 align_corners=False)[0]
            for bx, by, r, c0, c1 in blobs.tolist():
                cx, cy = (bx + 0.6 * u) % 1 * w, (by + 0.3 * u) % 1 * h
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (20 + 40 * r) ** 2
                view[:, mask] = torch.tensor([255 * c0, 255 * c1, 128.0])[:, None]
            noise = 6 * torch.randn(3, h, w, generator=g)  # sensor noise: a camera's bitrate, not a cartoon's
            video[t] = (view + noise).clamp(0, 255).to(torch.uint8)
        write_video(out / f"video_{k:03d}.mp4", video, fps=fps, gop=gop)
    return out


@dataclass
class LoaderRow:
    method: str
    size: int
    data: str
    decode_ms: float
    augment_ms: float

    @property
    def samples_per_s(self) -> float:
        return 1000 / (self.decode_ms + self.augment_ms)

    @property
    def workers_per_h100(self) -> float:
        return H100_SAMPLES_PER_S[self.method] / self.samples_per_s


def time_method(method: str, size: int, data: str, overrides: list[str], samples: int) -> LoaderRow:
    """Mean decode and augmentation time per sample of ``method``'s paper config on ``overrides``' data:
    the dataset's ``read_sample``, then its transform on the sample's views (``repeat`` copies each)."""
    cfg = load_config(PAPER_CONFIGS[method], [*overrides, f"augment.size={size}"])
    ds = build_dataset(cfg)
    records = ds.source.records
    decode = augment = 0.0
    for i in range(samples):
        start = time.perf_counter()
        _, clips = read_sample(ds.opener, records[i % len(records)], ds.sampler, np.random.default_rng([0, i]))
        middle = time.perf_counter()
        repeat = ds.repeat or (1,) * len(clips)
        ds.transform.views([c for c, k in zip(clips, repeat, strict=True) for _ in range(k)],
                           torch.Generator().manual_seed(i))
        decode += middle - start
        augment += time.perf_counter() - middle
    return LoaderRow(method, size, data, 1000 * decode / samples, 1000 * augment / samples)


def run_loader_bench(out: Path, videos: int = 4, samples: int = 6, methods: tuple[str, ...] = tuple(PAPER_CONFIGS),
                     seconds: float = 10.0) -> tuple[list[LoaderRow], dict[str, float]]:
    """Generate, prepare and time; the rows and the three copies' sizes in MB."""
    raw = kinetics_like(out / "raw", videos, seconds)
    prepare_dataset(raw, out / "prepared", PrepareOptions(short_side=320, gop=12), jobs=2)
    prepare_dataset(raw, out / "frames", PrepareOptions(to="frames", short_side=320), jobs=2)
    frame_list = out / "frames" / "frames_train.txt"
    dirs = sorted(p for p in (out / "frames").iterdir() if p.is_dir())
    frame_list.write_text("".join(f"{d.name} {len(list(d.glob('img_*.jpg')))}\n" for d in dirs))
    formats = {"raw 640x360, GOP 250": [f"data.source={raw}", "data.layout=folder"],
               "prepared 320, GOP 12": [f"data.source={out / 'prepared'}", "data.layout=folder"],
               "JPEG frames 320": [f"data.source={frame_list}", "data.layout=frame_list"]}
    rows = []
    for method in methods:
        sizes = sorted({load_config(PAPER_CONFIGS[method]).augment.size} | ({112} if method in CLIP_METHODS else set()))
        for size in sizes:
            for name, overrides in formats.items():
                rows.append(time_method(method, size, name, overrides, samples))
    megabytes = {name: sum(f.stat().st_size for f in (out / d).rglob("*") if f.is_file()) / 2**20
                 for name, d in (("raw", "raw"), ("prepared", "prepared"), ("frames", "frames"))}
    return rows, megabytes


def render_loader(rows: list[LoaderRow], megabytes: dict[str, float], videos: int, seconds: float) -> str:
    lines = [f"Kinetics-like videos: {videos} x {seconds:g} s at 25 fps; on disk raw {megabytes['raw']:.1f} MB, "
             f"prepared {megabytes['prepared']:.1f} MB ({megabytes['prepared'] / megabytes['raw']:.2f} of raw), "
             f"JPEG frames {megabytes['frames']:.1f} MB.", "",
             "| method | px | data | decode ms | augment ms | samples/s per worker | H100 samples/s "
             "| workers per H100 |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.size} | {r.data} | {r.decode_ms:.1f} | {r.augment_ms:.1f} | "
                     f"{r.samples_per_s:.1f} | {H100_SAMPLES_PER_S[r.method]:.0f} | {math.ceil(r.workers_per_h100)} |")
    return "\n".join(lines)
