"""Corrupt-video fuzzing across every decoder: truncations at random offsets, flipped bytes,
zero-length, wrong extensions, a 1-frame video, variable frame rate, odd sizes, absurd frame sizes
in a header, a broken JPEG in a frame folder. Every case must decode or raise a DecodeError naming
the file: never another exception, never a hang (faulthandler ends the run after 120 s)."""

from __future__ import annotations

import faulthandler
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.data.check import check_source
from vidssl.data.dataset import FileOpener, VideoDataset
from vidssl.data.decoders import open_video, torchcodec_available
from vidssl.data.records import VideoRecord, VideoSource
from vidssl.data.samplers import RandomClipsSampler
from vidssl.data.transforms import ClipAugment
from vidssl.errors import DecodeError

BACKENDS = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])


def write_raw(path: Path, frames: np.ndarray, pts: list[int] | None = None, pix_fmt: str = "yuv420p") -> None:
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if pts is not None:
            s.time_base = s.codec_context.time_base = tb
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, video_files, frames) -> list[Path]:
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    cases: list[Path] = []
    for name in ("h264_short_gop", "vp9", "mpeg4_avi"):
        src = video_files[name]
        data = src.read_bytes()
        for k, cut in enumerate(sorted(rng.integers(1, len(data), 6))):
            cases.append(d / f"{name}_trunc{k}{src.suffix}")
            cases[-1].write_bytes(data[:cut])
        for k in range(6):
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), 8):
                buf[pos] ^= 0xFF
            cases.append(d / f"{name}_flip{k}{src.suffix}")
            cases[-1].write_bytes(bytes(buf))
    shutil.copy(video_files["h264_short_gop"], d / "mp4_named.avi")
    shutil.copy(video_files["vp9"], d / "webm_named.mp4")
    (d / "zero.mp4").write_bytes(b"")
    img = frames.permute(0, 2, 3, 1).numpy()
    write_raw(d / "one_frame.mp4", img[:1])
    write_raw(d / "vfr.mp4", img[:8], pts=[0, 40, 60, 130, 140, 200, 400, 410])
    write_raw(d / "odd_size.mp4", img[:6, :31, :29], pix_fmt="yuv444p")
    for name, (w, h) in {"absurd_header.y4m": (10000, 10000), "impossible_header.y4m": (200000, 100000)}.items():
        (d / name).write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 C420jpeg\nFRAME\n".encode() + rng.bytes(3000))
    cases += [d / "mp4_named.avi", d / "webm_named.mp4", d / "zero.mp4", d / "one_frame.mp4", d / "vfr.mp4",
              d / "odd_size.mp4", d / "absurd_header.y4m", d / "impossible_header.y4m"]
    return cases


@pytest.fixture(autouse=True)
def no_hangs():
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def read(path: Path, backend: str) -> int:
    reader = open_video(path, backend)
    try:
        n = reader.num_frames
        if n:
            out = reader.get_frames(sorted({0, n // 2, n - 1}))
            assert out.dtype.is_floating_point is False and out.shape[1] == 3
        return n
    finally:
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_case_decodes_or_raises_a_decode_error(corpus, backend):
    outcomes = {}
    for path in corpus:
        try:
            outcomes[path.name] = f"ok {read(path, backend)} frames"
        except DecodeError as exc:
            assert path.name in str(exc)  # the message names the file
            outcomes[path.name] = "reported"
    reported = sum(v == "reported" for v in outcomes.values())
    assert outcomes["zero.mp4"] == outcomes["absurd_header.y4m"] == outcomes["impossible_header.y4m"] == "reported"
    assert outcomes["vfr.mp4"] == "ok 8 frames" and outcomes["one_frame.mp4"] == "ok 1 frames"
    assert outcomes["odd_size.mp4"] == "ok 6 frames" and outcomes["mp4_named.avi"].startswith("ok")
    assert 5 <= reported < len(corpus)  # most truncations are caught; flipped bytes often still decode


def test_variable_frame_rate_is_frame_exact(corpus):
    path = next(p for p in corpus if p.name == "vfr.mp4")
    with av.open(str(path)) as c:
        reference = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for backend in BACKENDS:
        got = open_video(path, backend).get_frames([7, 0, 3])
        for k, i in enumerate([7, 0, 3]):
            diff = np.abs(got[k].permute(1, 2, 0).numpy().astype(int) - reference[i].astype(int)).mean()
            assert diff < 2.0, (backend, i, diff)


def test_check_and_the_loader_count_what_fails(corpus, tmp_path):
    source = VideoSource([VideoRecord(str(p)) for p in corpus], root=str(tmp_path))
    report = check_source(source, FileOpener("pyav"), min_frames=2)
    failing = set()
    for p in corpus:
        try:
            if read(p, "pyav") < 2:
                failing.add(str(p))
        except DecodeError:
            failing.add(str(p))
    assert {pr.where for pr in report.problems} == failing and report.ok == len(corpus) - len(failing)
    unusable = set()  # cannot be opened, or too short for the sampler: the loader must never return them
    for p in corpus:
        try:
            reader = open_video(p, "pyav")
            if reader.num_frames < 2:
                unusable.add(str(p))
            reader.close()
        except DecodeError:
            unusable.add(str(p))
    assert unusable <= failing
    ds = VideoDataset(source, RandomClipsSampler(1, 2), ClipAugment(size=16), FileOpener("pyav"),
                      max_substitutes=len(corpus))
    samples = [ds[i] for i in range(len(ds))]
    # A file that opens but has broken frames may still give a sample whose frames decode.
    assert all(str(corpus[s["index"]]) not in unusable for s in samples)
    assert sum(s["skipped"] for s in samples) >= len(unusable)


def test_broken_jpeg_in_a_frame_folder(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(tmp_path / f"img_{i + 1:05d}.jpg")
    data = (tmp_path / "img_00002.jpg").read_bytes()
    (tmp_path / "img_00002.jpg").write_bytes(data[: len(data) // 3])
    reader = open_video(tmp_path)
    assert reader.get_frames([0, 2]).shape == (2, 3, 8, 8)
    with pytest.raises(DecodeError, match="img_00002.jpg"):
        reader.get_frames([1])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg CLI writes the rotation metadata")
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied_by_every_backend(video_files, tmp_path, degrees):
    import subprocess

    out = tmp_path / f"rot{degrees}.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(video_files["h264_short_gop"]), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={degrees}", str(out)], check=True)
    raw = open_video(video_files["h264_short_gop"], "pyav").get_frames([0, 5])
    k = {90: 1, 180: 2, 270: -1}[degrees]  # display rotation is counter-clockwise
    expected = torch.rot90(raw, k=k, dims=(2, 3))
    for backend in BACKENDS:
        got = open_video(out, backend).get_frames([0, 5])
        assert got.shape == expected.shape, backend
        assert (got.float() - expected.float()).abs().mean() < 2.0, backend
