"""The training/evaluation dataset: record → reader → sampler → transform, with counted skips.

``__getitem__`` opens the video inside the worker (one FFmpeg thread), asks the sampler for a plan,
decodes the union of the plan's frame indices once, and augments each view. Randomness comes from
``(seed, epoch, index)`` only, so a sample is the same whatever the worker count and an interrupted
run resumes exactly.

**Bad videos** (missing, unreadable, 0 frames, and by default shorter than the sampler's
``min_frames``): with ``strict=False`` the sample is replaced by the next video (deterministically)
and the replacement is counted in the sample's ``skipped`` field and logged with the file name and
reason; with ``strict=True`` a :class:`~vidssl.errors.DataError` naming the file is raised. After
``max_substitutes`` consecutive bad videos the dataset gives up with a DataError (the data is
mostly broken: better to stop than to loop).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vidssl.data.decoders import VideoReader, open_video
from vidssl.data.records import VideoRecord, VideoSource
from vidssl.data.samplers import SamplePlan
from vidssl.errors import DataError, DecodeError

log = logging.getLogger(__name__)
SHORT_VIDEO_POLICIES = ("skip", "repeat")


class Sampler(Protocol):
    min_frames: int

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan: ...


class Transform(Protocol):
    """Per-view augmentation (:class:`~vidssl.data.transforms.ClipAugment`): a ``(T, C, H, W)`` uint8
    clip and the sample's generator → a normalised float ``(T, C, H, W)`` view."""

    def __call__(self, clip: torch.Tensor, g: torch.Generator) -> torch.Tensor: ...


def read_sample(opener: Callable[[VideoRecord], VideoReader], record: VideoRecord, sampler: Sampler,
                rng: np.random.Generator | None, min_frames: int = 1) -> tuple[SamplePlan, list[torch.Tensor]]:
    """Open ``record``, plan a sample, decode the union of the plan's frame indices once and slice
    it per view: ``(plan, [(T, C, H, W) uint8 per view])``. A video with no frames, or fewer than
    ``min_frames``, is a :class:`~vidssl.errors.DecodeError` naming the file."""
    reader = opener(record)
    try:
        n = reader.num_frames
        if n <= 0:
            raise DecodeError(record.path, "video has 0 frames")
        if n < min_frames:
            raise DecodeError(record.path, f"too short: {n} frames < {min_frames} needed by the sampler")
        plan = sampler.plan(n, rng)
        wanted = plan.all_indices
        frames = reader.get_frames(wanted)
    finally:
        reader.close()
    pos = {f: k for k, f in enumerate(wanted)}
    return plan, [frames[[pos[f] for f in view]] for view in plan.views]


class FileOpener:
    """Picklable reader factory for files and frame folders."""

    def __init__(self, backend: str = "auto", threads: int = 1) -> None:
        self.backend = backend
        self.threads = threads

    def __call__(self, record: VideoRecord) -> VideoReader:
        return open_video(record.path, self.backend, self.threads)


class VideoDataset(Dataset):
    """Samples for one method: ``{"views": [Tensor], "info": {str: Tensor}, "label", "index",
    "skipped"}``.

    ``repeat[i]`` augmented copies are made of the plan's view ``i`` (SeCo: ``(2, 1, 1)``, two views
    of the anchor). ``layout="clip"`` returns views as ``(C, T, H, W)``; ``"frame"`` as ``(C, H, W)``
    (views of one frame) and ``"frames"`` as ``(T, C, H, W)``.
    """

    def __init__(
        self,
        source: VideoSource,
        sampler: Sampler,
        transform: Transform,
        opener: Callable[[VideoRecord], VideoReader] | None = None,
        repeat: Sequence[int] | None = None,
        layout: str = "clip",
        seed: int = 0,
        strict: bool = False,
        short_videos: str = "skip",
        max_substitutes: int = 10,
    ) -> None:
        if layout not in ("clip", "frame", "frames"):
            raise ValueError(f"layout must be clip, frame or frames, got {layout!r}")
        if short_videos not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"short_videos must be one of {SHORT_VIDEO_POLICIES}")
        if strict:
            source.raise_if_problems()
        elif source.problems:
            log.warning("%d entries of %s skipped while parsing (run `vidssl data check` for the list)",
                        len(source.problems), source.root)
        if not source.records:
            raise DataError(f"{source.root}: no usable videos")
        self.source = source
        self.sampler = sampler
        self.transform = transform
        self.opener = opener or FileOpener()
        self.repeat = tuple(repeat) if repeat is not None else None
        self.layout = layout
        self.seed = seed
        self.strict = strict
        self.short_videos = short_videos
        self.max_substitutes = max_substitutes
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key``: an index (at the epoch of :meth:`set_epoch`) or an ``(epoch, index)`` pair, as the
        training loop's run-long sampler yields them (its loader workers live across epochs)."""
        sample, clips, g = self._read(key)
        repeat = self.repeat or (1,) * len(clips)
        if len(repeat) != len(clips):
            raise ValueError(f"repeat has {len(repeat)} entries for {len(clips)} sampled views")
        clips = [clip for clip, copies in zip(clips, repeat, strict=True) for _ in range(copies)]
        views = getattr(self.transform, "views", None)  # ClipAugment: the sample's views together
        augmented = views(clips, g) if views else [self.transform(clip, g) for clip in clips]
        sample["views"] = [self._layout(x) for x in augmented]
        return sample

    def _read(self, key: int | tuple[int, int]) -> tuple[dict[str, Any], list[torch.Tensor], torch.Generator]:
        """A sample's fields other than its views, its decoded clips and its augmentation generator
        (a bad video is replaced by the next one, counted in ``skipped``)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        n = len(self.source.records)
        for attempt in range(self.max_substitutes + 1):
            i = (index + attempt) % n
            record = self.source.records[i]
            rng = np.random.default_rng([self.seed, epoch, i])
            min_frames = self.sampler.min_frames if self.short_videos == "skip" else 1
            try:
                plan, clips = read_sample(self.opener, record, self.sampler, rng, min_frames)
            except DataError as exc:
                if self.strict:
                    raise
                log.warning("skipping %s", exc)
                continue
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            return {
                "info": {k: torch.as_tensor(v) for k, v in plan.info.items()},
                "label": -1 if record.label is None else record.label,
                "index": i,
                "skipped": attempt,
            }, clips, g
        raise DataError(f"{self.max_substitutes + 1} consecutive unusable videos from "
                        f"{self.source.records[index].path}: is the dataset broken? "
                        "(run `vidssl data check`)")

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "clip":
            return x.permute(1, 0, 2, 3).contiguous()
        if self.layout == "frame":
            return x[0]
        return x


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: silence per-worker thread oversubscription."""
    torch.set_num_threads(1)


_NUMBER_FIELDS = ("label", "index", "skipped")


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The loader's ``collate_fn`` for :class:`VideoDataset`: the batch ``default_collate`` makes
    (``views`` a list of ``(B, ...)`` tensors, ``info`` a dict, ``label``/``index``/``skipped``
    ``(B,)``), held in two tensors: the views are views of one stacked tensor, the integer fields
    and integer ``info`` entries columns of one table. A loader worker hands each tensor to the
    training process as a shared-memory file and descriptor, ~1.3 ms apiece on 2 CPU cores whatever
    its size (benchmarks.md): VCLR's batch of 7 views and 4 fields took 9-11 ms to hand over, now ~4."""
    n, per_sample = len(samples), len(samples[0]["views"])
    shapes = {tuple(v.shape) for s in samples for v in s["views"]}
    if len(shapes) == 1 and all(len(s["views"]) == per_sample for s in samples):
        # default_collate stacks into shared memory inside a worker: no copy when handed over
        stacked = default_collate([s["views"][k] for k in range(per_sample) for s in samples])
        views = list(stacked.view(per_sample, n, *shapes.pop()).unbind(0))
    else:  # views of different shapes: one tensor per view
        views = default_collate([s["views"] for s in samples])
    first = samples[0]["info"]
    packed = [k for k, v in first.items() if v.dtype == torch.int64]
    info = {k: default_collate([s["info"][k] for s in samples]) for k in first if k not in packed}
    table = default_collate([torch.cat([torch.tensor([s[k] for k in _NUMBER_FIELDS]),
                                        *(s["info"][k].reshape(-1) for k in packed)]) for s in samples])
    fields = {k: table[:, i] for i, k in enumerate(_NUMBER_FIELDS)}
    start = len(_NUMBER_FIELDS)
    for k in packed:
        shape = first[k].shape
        info[k] = table[:, start:start + math.prod(shape)].reshape(n, *shape)  # a view of the table
        start += math.prod(shape)
    return {"views": views, "info": {k: info[k] for k in first}, **fields}
