"""Video decoders behind one interface: ``reader.get_frames(indices) -> (N, C, H, W) uint8``.

Frame ``i`` is the ``i``-th frame in presentation order (sorted timestamps), in every backend, so
that the same indices give the same frames from PyAV, TorchCodec and a frame folder extracted from
the same video. Display rotation metadata (phone videos) is applied by every backend. Readers
decode only the requested frames (seeking to key frames, decoding forward from there), never the
whole video.

Readers are opened lazily, inside DataLoader workers, with one FFmpeg thread each (parallelism
comes from the workers). Every failure raises :class:`vidssl.errors.DecodeError` naming the file.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vidssl.errors import DecodeError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
BACKENDS = ("auto", "pyav", "torchcodec", "frames")
MAX_PIXELS = 8192 * 8192  # larger frame sizes in a header are treated as corrupt


class VideoReader(Protocol):
    """What every decoder offers."""

    path: str
    num_frames: int
    fps: float

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as ``(N, C, H, W)`` uint8 RGB."""
        ...

    def close(self) -> None: ...


def _check_indices(path: str, indices: Sequence[int], num_frames: int) -> list[int]:
    idx = [int(i) for i in indices]
    bad = [i for i in idx if i < 0 or i >= num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} outside [0, {num_frames})")
    return idx


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the stream's display rotation (degrees counter-clockwise, phone videos), as TorchCodec
    does, so that every backend returns the frame as it is meant to be seen."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def _existing_file(path: str | os.PathLike[str]) -> str:
    """``path`` as a string, or a DecodeError if it is missing or empty."""
    path = str(path)
    if not os.path.isfile(path):
        raise DecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    return path


def _stack(path: str, frames: dict[int, np.ndarray], indices: list[int]) -> torch.Tensor:
    missing = sorted({i for i in indices if i not in frames})
    if missing:
        raise DecodeError(path, f"frames {missing[:5]} could not be decoded (truncated or corrupt?)")
    arr = np.stack([frames[i] for i in indices])  # (N, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


class PyAVReader:
    """PyAV decoder with frame-exact seeking.

    On open, the packets are demuxed (not decoded) once to build the table of presentation
    timestamps and key frames; ``num_frames`` is the number of timestamped video packets. Wanted
    frames are decoded in order; a seek happens only when it lands past the current position and
    skips more than ``seek_gap`` frames: decoding a few frames is cheaper than a seek, and seeking
    back to a key frame already passed would decode the same frames twice (docs/benchmarks.md).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1, seek_gap: int = 16) -> None:
        import av

        self.seek_gap = seek_gap
        self.path = _existing_file(path)
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except Exception as exc:  # FFmpeg raises many error types; all mean "not a readable video"
            raise DecodeError(self.path, f"cannot open: {exc}") from exc
        try:
            if not self._container.streams.video:
                raise DecodeError(self.path, "no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = threads
            pts: list[int] = []
            keys: list[int] = []
            for packet in self._container.demux(self._stream):
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None or packet.size == 0:
                    continue
                pts.append(t)
                if packet.is_keyframe:
                    keys.append(t)
        except DecodeError:
            self._container.close()
            raise
        except Exception as exc:
            self._container.close()
            raise DecodeError(self.path, f"cannot read packets: {exc}") from exc
        self._pts = sorted(pts)
        self._index_of = {t: i for i, t in enumerate(self._pts)}
        self._keys = sorted(keys) or self._pts[:1]
        self.num_frames = len(self._pts)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.height = int(self._stream.codec_context.height)
        self.width = int(self._stream.codec_context.width)
        if self.width * self.height > MAX_PIXELS:
            self._container.close()
            raise DecodeError(self.path, f"absurd frame size {self.width}x{self.height}")

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode forward through the wanted frames in presentation order; seek (to the key frame
        before the next wanted frame) only when that skips more than ``seek_gap`` frames."""
        idx = _check_indices(self.path, indices, self.num_frames)
        targets = sorted(set(idx))
        wanted = set(targets)
        frames: dict[int, np.ndarray] = {}
        decoding = None
        last = -1  # index of the last decoded frame
        try:
            for target in targets:
                if target in frames:
                    continue
                key = self._keys[max(bisect.bisect_right(self._keys, self._pts[target]) - 1, 0)]
                # Seek when decoding cannot reach the target (none started, or it lies behind), or
                # when the seek lands past the current position and skips more than seek_gap frames.
                if decoding is None or target <= last or (
                        self._index_of[key] > last and target - last > self.seek_gap):
                    self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
                    decoding = self._container.decode(self._stream)
                for frame in decoding:
                    i = self._index_of.get(frame.pts, -1)
                    if i < 0:
                        continue
                    last = i
                    if i in wanted:
                        frames[i] = _upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))
                    if i >= target:
                        break
        except Exception as exc:
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc
        return _stack(self.path, frames, idx)

    def close(self) -> None:
        self._container.close()


class TorchCodecReader:
    """TorchCodec decoder in exact seek mode (frame index = presentation order, as PyAV)."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        problem = torchcodec_problem()
        if problem:  # the setup's fault, not the video's: not a DecodeError, which a run would skip
            raise RuntimeError(
                "TorchCodec is not usable here: install it with `pip install vidssl[torchcodec]` "
                f"and system FFmpeg (`apt-get install ffmpeg`). Cause: {problem}"
            )
        from torchcodec.decoders import VideoDecoder

        self.path = _existing_file(path)
        try:
            self._decoder = VideoDecoder(
                self.path, seek_mode="exact", num_ffmpeg_threads=threads, dimension_order="NCHW"
            )
            meta = self._decoder.metadata
            self.num_frames = int(meta.num_frames or 0)
            self.fps = float(meta.average_fps or 0.0)
            width, height = int(meta.width or 0), int(meta.height or 0)
        except Exception as exc:
            raise DecodeError(self.path, f"cannot open: {exc}") from exc
        if width * height > MAX_PIXELS:
            raise DecodeError(self.path, f"absurd frame size {width}x{height}")

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        idx = _check_indices(self.path, indices, self.num_frames)
        unique = sorted(set(idx))
        try:
            batch = self._decoder.get_frames_at(indices=unique).data
        except Exception as exc:
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc
        pos = {i: n for n, i in enumerate(unique)}
        return batch[[pos[i] for i in idx]].contiguous()

    def close(self) -> None:
        self._decoder = None


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of a frame folder in frame order (``img_00001.jpg``, ``frame_00001.png`` ...)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


class FrameFolderReader:
    """A folder of pre-extracted JPEG/PNG frames; frame ``i`` is the ``i``-th file in sorted order."""

    def __init__(self, path: str | os.PathLike[str], fps: float = 0.0) -> None:
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise DecodeError(self.path, "frame folder not found")
        self._files = list_frame_files(self.path)
        self.num_frames = len(self._files)
        if self.num_frames == 0:
            raise DecodeError(self.path, "frame folder holds no .jpg/.png frames")
        self.fps = fps

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        from PIL import Image

        idx = _check_indices(self.path, indices, self.num_frames)
        frames: dict[int, np.ndarray] = {}
        for i in sorted(set(idx)):
            try:
                with Image.open(self._files[i]) as img:
                    frames[i] = np.asarray(img.convert("RGB"))
            except Exception as exc:  # PIL raises several types for a broken image
                raise DecodeError(str(self._files[i]), f"cannot decode image: {exc}") from exc
        shapes = {a.shape for a in frames.values()}
        if len(shapes) > 1:
            raise DecodeError(self.path, f"frames differ in size: {sorted(shapes)}")
        return _stack(self.path, frames, idx)

    def close(self) -> None:
        pass


def torchcodec_problem() -> str | None:
    """Why TorchCodec cannot decode video here (``None``: it can). TorchCodec 0.17 imports without a
    system FFmpeg (its image decoders need none) and reports ``ffmpeg_major_version = None``; its
    video decoder would fail at first use."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as exc:  # ImportError, or a missing system FFmpeg in older versions
        return f"{type(exc).__name__}: {exc}"
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
        return "TorchCodec found no FFmpeg libraries (versions 4-9) to load"
    return None


def torchcodec_available() -> bool:
    return torchcodec_problem() is None


def open_video(path: str | os.PathLike[str], backend: str = "auto", threads: int = 1) -> VideoReader:
    """Open ``path`` with ``backend``. ``auto``: a frame folder for a directory, else TorchCodec where
    it loads (exact seeks: faster on the sparse samples SSL methods draw, docs/benchmarks.md) and
    PyAV otherwise; both give the same frames."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoder backend {backend!r}; choose one of {BACKENDS}")
    if backend == "frames" or (backend == "auto" and os.path.isdir(path)):
        return FrameFolderReader(path)
    if backend == "torchcodec" or (backend == "auto" and torchcodec_available()):
        return TorchCodecReader(path, threads=threads)
    return PyAVReader(path, threads=threads)
