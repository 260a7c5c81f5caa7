"""Tracking sequences: frames plus one box per frame, from GOT-10k, OTB-100, plain folders, video
files with a boxes file, or the built-in synthetic sequences.

Boxes are ``(x, y, w, h)`` in continuous 0-based pixel coordinates (pixel ``i`` covers ``[i, i+1)``);
OTB's 1-based ``groundtruth_rect*.txt`` are shifted by one on reading. A frame without a box
(GOT-10k ``absence.label``, a ``nan`` or empty box) is not ``visible``: trackers still run on it,
training never uses it and the metrics skip it.

Layouts (``load_sequences``; ``auto`` tells them apart):

- **GOT-10k**: ``ROOT/<split>/list.txt`` naming ``<seq>/00000001.jpg ...``, ``groundtruth.txt``
  (``x,y,w,h`` per line), ``absence.label`` and ``cut_by_image.label`` (0/1 per line);
- **OTB-100**: ``ROOT/<Seq>/img/0001.jpg`` and ``groundtruth_rect.txt`` (comma, tab or space
  separated). Sequences with two targets hold ``groundtruth_rect.1.txt`` / ``.2.txt`` and become
  ``Jogging-1`` / ``Jogging-2``; those whose boxes cover part of the frames use OTB's frame ranges
  (``OTB_FRAME_RANGES``, from the benchmark's sequence configuration);
- **folders**: ``ROOT/<seq>/`` of images (or ``img/``) with ``groundtruth.txt`` or ``boxes.txt``;
- **videos**: ``ROOT/<name>.mp4`` with ``ROOT/<name>.txt`` holding its boxes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidssl.data.decoders import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, open_video
from vidssl.data.sources import list_path_problem
from vidssl.data.synthetic import SHAPES, SyntheticVideos, _Object, _placement, _shape_mask
from vidssl.errors import DataError

log = logging.getLogger(__name__)

# OTB-100 sequences whose boxes start or end inside the image folder: name -> (first, last), 1-based
OTB_FRAME_RANGES = {"David": (300, 770), "Football1": (1, 74), "Freeman3": (1, 460), "Freeman4": (1, 283),
                    "BlurCar1": (247, 988), "BlurCar3": (3, 359), "BlurCar4": (18, 397)}
BOX_FILES = ("groundtruth.txt", "boxes.txt")


@dataclass
class Sequence:
    name: str
    boxes: np.ndarray  # (N, 4) float64 x, y, w, h
    visible: np.ndarray  # (N,) bool
    read: Callable[[int], torch.Tensor] = field(repr=False)  # frame index -> (3, H, W) uint8

    def __len__(self) -> int:
        return len(self.boxes)


def read_boxes(path: Path, one_based: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and their visibility from a text file of ``x,y,w,h`` lines (any of ``,`` tab space);
    a malformed line is an error naming it. ``nan`` or a non-positive size means no box."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the boxes ({exc})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    boxes = np.empty((len(lines), 4))
    for n, line in enumerate(lines, 1):
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4 or any(math.isinf(v) for v in values):
            raise DataError(f"{path}:{n}: a box is 4 numbers x,y,w,h, got {line.strip()[:80]!r}")
        boxes[n - 1] = values
    if not len(boxes):
        raise DataError(f"{path}: no boxes")
    visible = np.isfinite(boxes).all(1) & (np.nan_to_num(boxes[:, 2:]) > 0).all(1)
    if one_based:
        boxes[:, :2] -= 1
    return boxes, visible


def _read_flags(path: Path, n: int) -> np.ndarray:
    try:
        values = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    bad = next((k for k, v in enumerate(values, 1) if v not in ("0", "1")), None)
    if bad is not None or len(values) != n:
        where = f"{path}:{bad}" if bad else str(path)
        raise DataError(f"{where}: want {n} lines of 0 or 1 (one per box)")
    return np.array([v == "1" for v in values])


def _images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: (int(p.stem) if p.stem.isdigit() else math.inf, p.name))


def _image_reader(files: list[Path]) -> Callable[[int], torch.Tensor]:
    def read(i: int) -> torch.Tensor:
        try:
            with Image.open(files[i]) as im:
                return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        except OSError as exc:
            raise DataError(f"{files[i]}: cannot read the image ({exc})") from exc
    return read


def _match(name: str, files: list[Path], boxes: np.ndarray, where: Path) -> list[Path]:
    """The images the boxes belong to: OTB's frame range where it has one, else the first ones."""
    if name.split("-")[0] in OTB_FRAME_RANGES:
        first, last = OTB_FRAME_RANGES[name.split("-")[0]]
        files = files[first - 1:last]
    if len(files) < len(boxes):
        raise DataError(f"{where}: {len(boxes)} boxes but {len(files)} images")
    if len(files) > len(boxes):
        log.info("%s: %d images, %d boxes: using the first %d images", name, len(files), len(boxes), len(boxes))
    return files[:len(boxes)]


def folder_sequences(folder: Path) -> list[Sequence]:
    """The sequence(s) of one folder: GOT-10k / plain (``groundtruth.txt``, ``boxes.txt``) or OTB
    (``img/`` + ``groundtruth_rect[.N].txt``, one sequence per target)."""
    frames_dir = folder / "img" if (folder / "img").is_dir() else folder
    files = _images(frames_dir)
    otb = sorted(folder.glob("groundtruth_rect*.txt"))
    plain = [folder / f for f in BOX_FILES if (folder / f).is_file()]
    if not otb and not plain:
        raise DataError(f"{folder}: no boxes file (groundtruth.txt, boxes.txt or OTB's groundtruth_rect.txt)")
    if not files:
        raise DataError(f"{frames_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    out = []
    for box_file in otb or plain[:1]:
        target = box_file.name[len("groundtruth_rect."):-len(".txt")] if box_file.name != "groundtruth_rect.txt" else ""
        name = f"{folder.name}-{target}" if target else folder.name
        boxes, visible = read_boxes(box_file, one_based=bool(otb))
        if (folder / "absence.label").is_file():
            visible &= ~_read_flags(folder / "absence.label", len(boxes))
        out.append(Sequence(name, boxes, visible, _image_reader(_match(name, files, boxes, box_file))))
    return out


def video_sequence(video: Path, box_file: Path, backend: str = "auto") -> Sequence:
    """A video file and its boxes (the reader is opened on the first frame asked for, and kept)."""
    boxes, visible = read_boxes(box_file)
    opened = []

    def read(i: int) -> torch.Tensor:
        if not opened:
            opened.append(open_video(video, backend))
            if len(boxes) > opened[0].num_frames:
                raise DataError(f"{box_file}: {len(boxes)} boxes but {video} has {opened[0].num_frames} frames")
        return opened[0].get_frames([i])[0]
    return Sequence(video.stem, boxes, visible, read)


def _got10k_names(folder: Path) -> list[str] | None:
    listing = folder / "list.txt"
    if not listing.is_file():
        return None
    names = []
    for n, line in enumerate(listing.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        problem = list_path_problem(name)
        if problem or "/" in name:
            raise DataError(f"{listing}:{n}: {name!r} is not a sequence folder name")
        names.append(name)
    return names


def load_sequences(root: str | Path, split: str = "train", backend: str = "auto") -> list[Sequence]:
    """Every sequence under ``root`` (GOT-10k root or split folder, OTB-100, folders, videos)."""
    root = Path(root)
    if (root / split / "list.txt").is_file():
        root = root / split
    if not root.is_dir():
        raise DataError(f"{root}: not a tracking dataset folder")
    names = _got10k_names(root)
    folders = [root / n for n in names] if names is not None else sorted(p for p in root.iterdir() if p.is_dir())
    out = []
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"{root / 'list.txt'}: names {folder.name}, which is not a folder in {root}")
        out += folder_sequences(folder)
    for video in sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS):
        if video.with_suffix(".txt").is_file():
            out.append(video_sequence(video, video.with_suffix(".txt"), backend))
        else:
            log.warning("skipping %s: no boxes file %s", video, video.with_suffix(".txt").name)
    if not out:
        raise DataError(f"{root}: no tracking sequences (GOT-10k, OTB-100, folders with groundtruth.txt, "
                        "or videos with a .txt of boxes)")
    return out


def synthetic_sequences(count: int, frames: int = 48, size: int = 128, seed: int = 0,
                        first: int = 0) -> list[Sequence]:
    """Built-in tracking sequences ``first .. first+count-1``: a textured target wandering, growing,
    shrinking and turning over a panning background under changing light, while two distractors
    cross it: one in the target's colours, one of its shape. The target is painted last, so it is
    never hidden, and its box is the exact extent of its pixels."""
    return [_synthetic_sequence(seed, first + k, frames, size) for k in range(count)]


def _synthetic_sequence(seed: int, k: int, frames: int, size: int) -> Sequence:
    g = np.random.default_rng([seed, 7, k])
    s = size
    target = _Object(SHAPES[int(g.integers(len(SHAPES)))], (g.uniform(0, 255, 3), g.uniform(0, 255, 3)),
                     int(g.integers(2)), float(g.uniform(3, 6)), float(g.uniform(0.08, 0.12) * s))
    # one distractor in the target's colours and another shape, one of its shape in other colours
    others = [k for k in range(len(SHAPES)) if SHAPES[k] != target.shape]
    same_colours = _Object(SHAPES[others[int(g.integers(len(others)))]], target.colors, int(g.integers(3)),
                           float(g.uniform(3, 6)), target.radius * float(g.uniform(0.8, 1.2)))
    same_shape = _Object(target.shape, (g.uniform(0, 255, 3), g.uniform(0, 255, 3)), int(g.integers(3)),
                         float(g.uniform(3, 6)), target.radius * float(g.uniform(0.8, 1.2)))
    amp, freq, phase = g.uniform(0.15, 0.3, 2) * s, g.uniform(0.5, 1.5, 2) * 2 * math.pi, g.uniform(0, 2 * math.pi, 2)
    grow, spin = float(g.uniform(0.2, 0.4)), float(g.uniform(-1.5, 1.5))
    light = (float(g.uniform(0.2, 0.35)), float(g.uniform(1, 2)) * 2 * math.pi, g.uniform(-0.15, 0.15, 3))
    crossings = [(g.uniform(0, s, 2), g.uniform(0, s, 2)) for _ in range(2)]
    bg = (g.uniform(60, 200, 3), g.uniform(60, 200, 3), g.uniform(0.1, 0.3, 2), g.uniform(0, math.pi, 2),
          g.uniform(-0.3, 0.3, 2) * s)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)

    def state(t: int) -> tuple[float, float, float, float]:
        u = t / max(frames - 1, 1)
        cx, cy = s / 2 + amp * np.sin(freq * u + phase)
        return float(cx), float(cy), math.exp(grow * math.sin(2 * math.pi * u)), spin * u

    def render(t: int) -> np.ndarray:
        u = t / max(frames - 1, 1)
        w = sum(np.sin(f * (math.cos(a) * (xx + bg[4][0] * u) + math.sin(a) * (yy + bg[4][1] * u)))
                for f, a in zip(bg[2], bg[3], strict=True))
        img = (0.5 + 0.25 * w / 2)[..., None] * bg[0] + (0.5 - 0.25 * w / 2)[..., None] * bg[1]
        for obj, (start, end) in zip((same_colours, same_shape), crossings, strict=True):
            SyntheticVideos.paint(img, obj, *(start + (end - start) * u), 1.0, 0.0, 1.0, xx, yy)
        SyntheticVideos.paint(img, target, *state(t), 1.0, xx, yy)
        # the light changes: brightness swings and the colour cast drifts
        img *= (1 + light[0] * math.sin(light[1] * u)) * (1 + light[2] * u)
        return np.clip(img, 0, 255).astype(np.uint8)

    boxes = np.array([_extent(target, *state(t), xx, yy) for t in range(frames)])
    cache: dict[int, torch.Tensor] = {}

    def read(t: int) -> torch.Tensor:
        if t not in cache:
            cache[t] = torch.from_numpy(render(t)).permute(2, 0, 1).contiguous()
        return cache[t]
    visible = (boxes[:, 2:] > 0).all(1)
    return Sequence(f"synthetic-{seed}-{k:03d}", boxes, visible, read)


def _extent(obj: _Object, cx: float, cy: float, scale: float, angle: float, xx: np.ndarray,
            yy: np.ndarray) -> tuple[float, float, float, float]:
    """The box ``(x, y, w, h)`` of the pixels ``obj`` covers (zeros when it covers none)."""
    placed = _placement(obj, cx, cy, scale, angle, xx, yy)
    if placed is None:
        return (0.0, 0.0, 0.0, 0.0)
    box, lx, ly = placed
    rows, cols = np.nonzero(_shape_mask(obj.shape, lx, ly))
    if not len(rows):
        return (0.0, 0.0, 0.0, 0.0)
    top, left = box[0].start + rows.min(), box[1].start + cols.min()
    return (float(left), float(top), float(cols.max() - cols.min() + 1), float(rows.max() - rows.min() + 1))
