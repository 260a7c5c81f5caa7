"""Which videos an evaluation uses: the built-in synthetic set, or a dataset on disk with a train
and a test split (UCF101 / HMDB51 / SSv2 / Kinetics CSV subsets, or two list files)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

from vidssl.data.dataset import FileOpener
from vidssl.data.decoders import VideoReader
from vidssl.data.records import VideoRecord, VideoSource
from vidssl.data.sources import load_source
from vidssl.data.synthetic import SyntheticVideos
from vidssl.errors import DataError


@dataclass(frozen=True)
class EvalData:
    source: str = "synthetic"  # "synthetic" or a dataset path (train split)
    test_source: str = ""  # a second list file for the test split (list layouts)
    layout: str = "auto"
    split: int = 1
    backend: str = "auto"
    labels: str = "motion"  # synthetic label set: motion | appearance | arrow
    synthetic_videos: int = 400
    synthetic_size: int = 64
    synthetic_frames: int = 64
    synthetic_seed: int = 0
    synthetic_clips_per_group: int = 2
    synthetic_dynamics: str = "arrow"

    def synthetic(self) -> SyntheticVideos:
        return SyntheticVideos(self.synthetic_videos, self.synthetic_size, self.synthetic_frames,
                               self.synthetic_seed, self.labels, self.synthetic_clips_per_group,
                               dynamics=self.synthetic_dynamics)

    def load(self, subset: str) -> tuple[VideoSource, Callable[[VideoRecord], VideoReader]]:
        if self.source == "synthetic":
            videos = self.synthetic()
            source = videos.source(subset)
            if not source.records:
                raise DataError(f"the synthetic {subset} split is empty with {self.synthetic_videos} videos: use "
                                f"more (whole recording groups of {self.synthetic_clips_per_group} clips go to test)")
            return source, videos.open
        if self.test_source:
            path = self.source if subset == "train" else self.test_source
            source = load_source(path, self.layout, self.split, subset)
        else:
            source = load_source(self.source, self.layout, self.split, subset)
        if not source.records:
            raise DataError(f"{self.source}: the {subset} split has no usable videos")
        return source, FileOpener(self.backend)

    def describe(self) -> str:
        if self.source == "synthetic":
            return (f"synthetic/{self.labels} ({self.synthetic_videos} videos, {self.synthetic_frames} frames, "
                    f"{self.synthetic_size}px, seed {self.synthetic_seed}, {self.synthetic_dynamics} dynamics)")
        return f"{self.source} ({self.layout}, split {self.split})"

    def key(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:12]
