from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from vidssl.data.decoders import (
    FrameFolderReader,
    PyAVReader,
    TorchCodecReader,
    open_video,
    torchcodec_available,
)
from vidssl.errors import DecodeError

FORMATS = ["h264_long_gop", "h264_short_gop", "vp9", "mpeg4_avi"]


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_pyav_frames_equal_sequential_decode(video_files, fmt):
    path = video_files[fmt]
    reference = full_decode(path)
    reader = PyAVReader(path)
    assert reader.num_frames == len(reference) == 24
    idx = [23, 0, 7, 7, 12, 1, 22]  # unsorted, repeated, crossing key frames
    got = reader.get_frames(idx)
    assert got.shape == (len(idx), 3, 32, 32) and got.dtype == torch.uint8
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(got[k].permute(1, 2, 0).numpy(), reference[i])
    reader.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_decoded_frames_resemble_source(video_files, frames, fmt):
    got = PyAVReader(video_files[fmt]).get_frames([0, 10, 23]).float()
    err = (got - frames[[0, 10, 23]].float()).abs().mean()
    assert err < 20  # lossy codecs, but the right frames: a wrong frame differs far more
    wrong = (got - frames[[5, 15, 3]].float()).abs().mean()
    assert wrong > err


def test_frame_folder_matches_pyav(tmp_path, video_files):
    from PIL import Image

    reader = PyAVReader(video_files["h264_short_gop"])
    all_frames = reader.get_frames(range(reader.num_frames))
    for i, f in enumerate(all_frames):
        Image.fromarray(f.permute(1, 2, 0).numpy()).save(tmp_path / f"img_{i + 1:05d}.png")
    folder = open_video(tmp_path)
    assert isinstance(folder, FrameFolderReader) and folder.num_frames == reader.num_frames
    idx = [3, 19, 0, 3]
    assert torch.equal(folder.get_frames(idx), reader.get_frames(idx))


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec (and system FFmpeg) not installed")
@pytest.mark.parametrize("fmt", FORMATS)
def test_torchcodec_matches_pyav(video_files, fmt):
    a, b = PyAVReader(video_files[fmt]), TorchCodecReader(video_files[fmt])
    assert a.num_frames == b.num_frames
    idx = [0, 5, 23, 11, 5]
    diff = (a.get_frames(idx).float() - b.get_frames(idx).float()).abs()
    # Same frames; the two FFmpeg builds may convert YUV->RGB with different rounding.
    assert diff.mean() < 2.0


def test_torchcodec_without_ffmpeg_is_not_available(monkeypatch, video_files):
    """TorchCodec 0.17 imports without a system FFmpeg and reports no FFmpeg version; its decoder
    would fail at first use, so it must not count as available (the CLI's check and these tests'
    skips rely on it)."""
    torchcodec = pytest.importorskip("torchcodec")
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)
    assert not torchcodec_available()
    # opening a video then fails as a setup error, not as a DecodeError (which a run counts as a
    # corrupt video and skips: every video would be skipped)
    with pytest.raises(RuntimeError, match="apt-get install ffmpeg") as info:
        open_video(video_files["h264_short_gop"], backend="torchcodec")
    assert not isinstance(info.value, DecodeError)
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", 7)
    assert torchcodec_available()


def test_out_of_range_index_is_an_error(video_files):
    reader = PyAVReader(video_files["vp9"])
    with pytest.raises(IndexError, match="outside"):
        reader.get_frames([24])


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown decoder backend"):
        open_video("x.mp4", "decord")


def test_auto_takes_torchcodec_where_it_loads_and_pyav_otherwise(monkeypatch, video_files):
    from vidssl.data import decoders

    monkeypatch.setattr(decoders, "torchcodec_available", lambda: False)
    reader = open_video(video_files["h264_short_gop"])
    assert isinstance(reader, PyAVReader)
    reader.close()
    if decoders.torchcodec_problem() is None:
        monkeypatch.setattr(decoders, "torchcodec_available", lambda: True)
        reader = open_video(video_files["h264_short_gop"])
        assert isinstance(reader, TorchCodecReader)
        reader.close()
