from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidssl.data.encode import write_video
from vidssl.data.synthetic import SyntheticVideos


@pytest.fixture(scope="session")
def synth() -> SyntheticVideos:
    return SyntheticVideos(num_videos=20, size=32, frames=24, seed=3, clips_per_group=1)


@pytest.fixture(scope="session")
def frames(synth: SyntheticVideos) -> torch.Tensor:
    return synth.render(4, range(synth.frames))


@pytest.fixture(scope="session")
def video_files(tmp_path_factory: pytest.TempPathFactory, frames: torch.Tensor) -> dict[str, Path]:
    """The same frames encoded as H.264 (long and short GOP), VP9 and MPEG-4."""
    d = tmp_path_factory.mktemp("videos")
    specs = {
        "h264_long_gop": ("a.mp4", "libx264", 250),
        "h264_short_gop": ("b.mp4", "libx264", 5),
        "vp9": ("c.webm", "libvpx-vp9", None),
        "mpeg4_avi": ("d.avi", "mpeg4", 6),
    }
    out = {}
    for name, (fname, codec, gop) in specs.items():
        write_video(d / fname, frames, codec=codec, gop=gop)
        out[name] = d / fname
    return out


@pytest.fixture(scope="session")
def ucf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ucf")
    SyntheticVideos(num_videos=20, size=32, frames=16, seed=1, clips_per_group=1).write_ucf101(d)
    return d
