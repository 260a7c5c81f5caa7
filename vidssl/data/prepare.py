"""``vidssl data prepare SRC DST``: a copy of a dataset that decodes fast.

Every video under ``SRC`` is decoded once (PyAV) and written to the same relative path under
``DST``:

- ``--to video`` (default): short side resized to ``short_side`` (never enlarged), frame rate
  capped at ``max_fps`` (frames dropped by time), H.264 with a key frame every ``gop`` frames
  (random access then decodes at most ``gop - 1`` extra frames), in the same container where it
  holds H.264 (``.mp4 .mkv .avi .mov``; a list that names ``Class/v_x.avi`` still finds it) and in
  ``.mp4`` for the others (SSv2's ``.webm``: the SSv2 reader accepts either);
- ``--to frames``: JPEG frames ``<video path without extension>/img_00001.jpg`` (the official
  SeCo/VCLR layout) and, per subset the layout has, a frame list ``frames_<subset>.txt``
  (``<dir> <num_frames> <label>``) for ``--layout frame_list``.

Every other file (class lists, split lists, CSV, JSON) is copied, with a video's file name whose
extension changed rewritten in text lists, so ``DST`` reads with the layout ``SRC`` had. Work runs
in ``jobs`` processes with a progress line and ETA; a finished file is skipped on a rerun and files
are written under a temporary name and renamed, so a killed run leaves nothing half-written under
a final name. A video that cannot be decoded is listed in
``DST/prepare_failures.txt`` with FFmpeg's reason and counted, never fatal.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from vidssl.data.decoders import VIDEO_EXTENSIONS
from vidssl.eval.progress import Progress

log = logging.getLogger(__name__)
H264_CONTAINERS = (".mp4", ".mkv", ".avi", ".mov")
FAILURES = "prepare_failures.txt"


@dataclass(frozen=True)
class PrepareOptions:
    to: str = "video"  # video | frames
    short_side: int = 320
    max_fps: float = 0.0  # 0: keep the source's rate
    gop: int = 12
    crf: int = 23
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.to not in ("video", "frames") or self.short_side < 16 or self.gop < 1 or self.max_fps < 0:
            raise ValueError("prepare: --to video|frames, --short-side >= 16, --gop >= 1, --max-fps >= 0")


def target_path(rel: Path, opts: PrepareOptions) -> Path:
    """Where a source video's prepared copy goes, relative to the destination root."""
    if opts.to == "frames":
        return rel.with_suffix("")
    return rel if rel.suffix.lower() in H264_CONTAINERS else rel.with_suffix(".mp4")


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(w, h)`` with the short side at most ``short_side``, aspect kept, both even (H.264 4:2:0)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _frames(src: Path, opts: PrepareOptions):
    """Decoded RGB frames of ``src`` resized, at most ``max_fps`` per second; and the output rate."""
    import av

    container = av.open(str(src))
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        out_rate = min(rate, opts.max_fps) if opts.max_fps else rate
        yield out_rate
        kept = 0
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / rate
            if opts.max_fps and t * out_rate + 1e-6 < kept:
                continue  # dropped: the next kept frame is due at kept / out_rate seconds
            kept += 1
            w, h = resized_size(frame.width, frame.height, opts.short_side)
            yield np.asarray(frame.to_image().resize((w, h), Image.BILINEAR))
    finally:
        container.close()


def prepare_video(src: Path, dst: Path, opts: PrepareOptions) -> int:
    """Write ``dst`` from ``src``; the number of frames written. Raises on an undecodable source."""
    tmp = dst.with_name(f".{dst.name}.partial{os.getpid()}{dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        count = _write_frames(src, tmp, opts) if opts.to == "frames" else _encode(src, tmp, opts)
        if count == 0:
            raise ValueError("no decodable frame")
        os.replace(tmp, dst)
        return count
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def _encode(src: Path, tmp: Path, opts: PrepareOptions) -> int:
    import av

    frames = _frames(src, opts)
    rate = next(frames)
    count = 0
    with av.open(str(tmp), mode="w", format=None if tmp.suffix != ".mkv" else "matroska") as out:
        stream = None
        for img in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
                stream.width, stream.height = img.shape[1], img.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = opts.gop
                stream.options = {"preset": "veryfast", "crf": str(opts.crf), "keyint_min": str(opts.gop),
                                  "sc_threshold": "0"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return count


def _write_frames(src: Path, tmp: Path, opts: PrepareOptions) -> int:
    tmp.mkdir(parents=True, exist_ok=True)
    frames = _frames(src, opts)
    next(frames)
    count = 0
    for count, img in enumerate(frames, 1):
        Image.fromarray(img).save(tmp / f"img_{count:05d}.jpg", quality=opts.jpeg_quality)
    return count


LIST_SUFFIXES = (".txt", ".csv", ".json", ".lst")


def copy_list(src: Path, dst: Path, renamed: dict[str, str]) -> None:
    """Copy a dataset file; in a text list, a video's file name whose extension the preparation
    changed (``x.webm`` -> ``x.mp4``) is rewritten wherever it stands as a whole name."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not renamed or src.suffix.lower() not in LIST_SUFFIXES:
        shutil.copy2(src, dst)
        return
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        shutil.copy2(src, dst)
        return
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in sorted(renamed, key=len, reverse=True))
                         + r")(?![\w.-])")
    dst.write_text(pattern.sub(lambda m: renamed[m.group(1)], text), encoding="utf-8")


def _job(src: str, dst: str, opts: PrepareOptions) -> tuple[str, int | None, str]:
    """Run in a worker: ``(src, frames or None, error)``."""
    try:
        return src, prepare_video(Path(src), Path(dst), opts), ""
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this video's, reported and counted
        return src, None, f"{type(exc).__name__}: {exc}"


def prepare_dataset(src: str | os.PathLike[str], dst: str | os.PathLike[str], opts: PrepareOptions,
                    jobs: int = 1) -> dict:
    """Prepare every video under ``src`` into ``dst`` and copy the other files; the counts and the
    per-video frame counts (``frames``: destination path relative to ``dst`` -> frames)."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"{dst}: the destination must lie outside the source {src}")
    videos, others = [], []
    for p in sorted(src.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            (videos if p.suffix.lower() in VIDEO_EXTENSIONS else others).append(p.relative_to(src))
    renamed = {rel.name: target_path(rel, opts).name for rel in videos if target_path(rel, opts).name != rel.name}
    for rel in others:
        if not (dst / rel).exists():
            copy_list(src / rel, dst / rel, renamed)
    todo = [rel for rel in videos if not (dst / target_path(rel, opts)).exists()]
    done, failures = len(videos) - len(todo), {}
    progress = Progress(f"preparing {src.name}", len(todo))
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(_job, str(src / rel), str(dst / target_path(rel, opts)), opts) for rel in todo]
        for future in as_completed(futures):
            path, count, error = future.result()
            if count is None:
                failures[str(Path(path).relative_to(src))] = error
            progress.update()
    dst.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{rel}\t{why}\n" for rel, why in sorted(failures.items()))
    (dst / FAILURES).write_text(lines)
    if opts.to == "video":
        _index(dst, [target_path(rel, opts) for rel in videos if str(rel) not in failures])
    return {"videos": len(videos), "prepared": len(todo) - len(failures), "skipped_done": done,
            "failed": failures}


def _index(dst: Path, rels: list[Path]) -> None:
    """The metadata index of the prepared videos (frames, fps), as reading them would build it."""
    from vidssl.data.index import VideoIndex, default_index_path
    from vidssl.errors import DataError

    index = VideoIndex(default_index_path(dst))
    for rel in rels:
        try:
            index.get(str(dst / rel))
        except DataError as exc:
            log.warning("prepared video %s does not read back: %s", rel, exc)
    index.save()
