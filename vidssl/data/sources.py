"""Dataset layouts (docs/data.md). Every parser returns a :class:`VideoSource` of
:class:`VideoRecord`; a bad entry (missing file, unknown class, label that disagrees with the
folder, a path outside the dataset root, a malformed line) becomes a :class:`Problem` naming the file
and line, never an exception, so ``vidssl data check`` can list them all.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from vidssl.data.decoders import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from vidssl.data.records import Problem, VideoRecord, VideoSource
from vidssl.errors import DataError

LAYOUTS = (
    "auto", "folder", "ucf101", "hmdb51", "kinetics_csv", "class_folders", "ssv2", "frame_list",
    "path_list",
)
SUBSETS = ("train", "test")
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+")


class _Collector:
    """Accumulates records and problems; resolves list paths safely inside the root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.records: list[VideoRecord] = []
        self.problems: list[Problem] = []

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(Problem(where, reason))

    def resolve(self, rel: str, where: str, candidates: Iterable[Path] | None = None) -> Path | None:
        """``rel`` under the root (or under one of ``candidates``); None and a problem if it
        escapes the root or does not exist."""
        for base in candidates or (self.root,):
            path = (base / rel).resolve()
            if not path.is_relative_to(self.root):
                self.problem(where, f"path {rel!r} points outside the dataset root {self.root}")
                return None
            if path.exists():
                return path
        self.problem(where, f"missing file {rel!r}")
        return None

    def add(self, path: Path, label: int | None, group: str | None = None,
            num_frames: int | None = None) -> None:
        self.records.append(VideoRecord(str(path), label, group, num_frames))

    def source(self, class_names: list[str] | None, layout: str) -> VideoSource:
        return VideoSource(self.records, class_names, str(self.root), layout, self.problems)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")


def parse_folder(root: str | os.PathLike[str]) -> VideoSource:
    """Every video file under ``root``, recursively, unlabeled."""
    col = _Collector(Path(root))
    if not col.root.is_dir():
        raise DataError(f"{root}: not a directory")
    for p in sorted(col.root.rglob("*")):
        if _is_video(p):
            col.add(p, None)
    return col.source(None, "folder")


def parse_class_folders(root: str | os.PathLike[str]) -> VideoSource:
    """``root/<class>/<video>`` (Kinetics folder-per-class); classes sorted by name."""
    col = _Collector(Path(root))
    if not col.root.is_dir():
        raise DataError(f"{root}: not a directory")
    classes = sorted(d.name for d in col.root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for k, cls in enumerate(classes):
        for p in sorted((col.root / cls).rglob("*")):
            if _is_video(p):
                col.add(p, k)
    return col.source(classes, "class_folders")


def _find(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        for base in (root, *(d for d in sorted(root.iterdir()) if d.is_dir())):
            if (base / name).is_file():
                return base / name
    return None


def parse_ucf101(root: str | os.PathLike[str], split: int = 1, subset: str = "train") -> VideoSource:
    """UCF101: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v_..._gXX_cYY.avi
    <1-based label>``), ``testlist0N.txt`` (class from the folder). Split files may sit in ``root``
    or a sub-folder (``ucfTrainTestlist``); videos in ``root`` or ``root/UCF-101``."""
    if subset not in SUBSETS:
        raise DataError(f"UCF101 subset must be train or test, got {subset!r}")
    col = _Collector(Path(root))
    class_ind = _find(col.root, ["classInd.txt"])
    if class_ind is None:
        raise DataError(f"{root}: classInd.txt not found (is this a UCF101 layout?)")
    classes: list[str] = []
    for n, line in _read_lines(class_ind):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise DataError(f"{class_ind}:{n}: expected '<{len(classes) + 1}> <ClassName>', got {line!r}")
        classes.append(parts[1])
    index = {c: k for k, c in enumerate(classes)}
    list_name = f"{subset}list{split:02d}.txt"
    list_file = _find(col.root, [list_name])
    if list_file is None:
        raise DataError(f"{root}: {list_name} not found (split {split})")
    video_roots = [col.root / "UCF-101", col.root] if (col.root / "UCF-101").is_dir() else [col.root]
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        parts = line.split()
        rel = parts[0]
        folder_class = Path(rel).parent.name
        if folder_class not in index:
            col.problem(where, f"unknown class {folder_class!r} (not in classInd.txt)")
            continue
        label = index[folder_class]
        if len(parts) > 1:
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                col.problem(where, f"bad label {parts[1]!r}: expected 1..{len(classes)}")
                continue
            if int(parts[1]) - 1 != label:
                col.problem(where, f"mislabeled: label {parts[1]} ({classes[int(parts[1]) - 1]}) "
                                   f"disagrees with folder {folder_class!r}")
                continue
        path = col.resolve(rel, where, video_roots)
        if path is not None:
            m = _UCF_GROUP.search(Path(rel).stem)
            col.add(path, label, f"{folder_class}_g{m.group(1)}" if m else None)
    return col.source(classes, "ucf101")


def parse_hmdb51(root: str | os.PathLike[str], split: int = 1, subset: str = "train") -> VideoSource:
    """HMDB51: ``<class>_test_split<N>.txt`` lines ``<video> <0|1|2>`` (1 train, 2 test, 0 unused);
    videos in ``root/<class>/`` (or ``root/videos/<class>/``). Classes sorted by name."""
    if subset not in SUBSETS:
        raise DataError(f"HMDB51 subset must be train or test, got {subset!r}")
    col = _Collector(Path(root))
    pattern = f"*_test_split{split}.txt"
    split_files = sorted(col.root.glob(pattern)) or sorted(col.root.glob(f"*/{pattern}"))
    if not split_files:
        raise DataError(f"{root}: no {pattern} split files found (is this an HMDB51 layout?)")
    suffix = f"_test_split{split}.txt"
    classes = [f.name[: -len(suffix)] for f in split_files]
    want = "1" if subset == "train" else "2"
    vroot = col.root / "videos" if (col.root / "videos").is_dir() else col.root
    for k, (cls, split_file) in enumerate(zip(classes, split_files, strict=True)):
        for n, line in _read_lines(split_file):
            where = f"{split_file}:{n}"
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                col.problem(where, f"expected '<video> <0|1|2>', got {line!r}")
                continue
            if parts[1] != want:
                continue
            path = col.resolve(f"{cls}/{parts[0]}", where, [vroot])
            if path is not None:
                col.add(path, k)
    return col.source(classes, "hmdb51")


def parse_kinetics_csv(csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                       subset: str | None = None) -> VideoSource:
    """Kinetics CSV ``label,youtube_id,time_start,time_end,split``; files
    ``<ytid>_<start:06d>_<end:06d>.<ext>`` in ``root/<label>/`` or ``root/``. Classes sorted by
    name; rows without a label (the test CSV) are unlabeled. ``subset`` filters the split column."""
    csv_path = Path(csv_path)
    col = _Collector(Path(root) if root else csv_path.parent)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    required = {"youtube_id", "time_start", "time_end"}
    if rows and not required <= set(rows[0]):
        raise DataError(f"{csv_path}: missing columns {sorted(required - set(rows[0]))}")
    classes = sorted({r["label"] for r in rows if r.get("label")})
    index = {c: k for k, c in enumerate(classes)}
    for n, row in enumerate(rows, 2):
        where = f"{csv_path}:{n}"
        if subset and row.get("split") and row["split"] != subset:
            continue
        try:
            stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        except ValueError:
            col.problem(where, f"bad time_start/time_end {row['time_start']!r}, {row['time_end']!r}")
            continue
        label = row.get("label") or None
        dirs = [col.root / label, col.root] if label else [col.root]
        found = next((d / f"{stem}{e}" for d in dirs for e in VIDEO_EXTENSIONS if (d / f"{stem}{e}").is_file()), None)
        if found is None:
            col.problem(where, f"missing video {stem}.* in {dirs[0]}")
            continue
        col.add(found, index[label] if label else None)
    return col.source(classes or None, "kinetics_csv")


def _ssv2_template(text: str) -> str:
    return text.replace("[", "").replace("]", "")


def parse_ssv2(root: str | os.PathLike[str], subset: str = "train") -> VideoSource:
    """Something-Something v2: ``labels.json`` (template → id), ``train.json`` /
    ``validation.json`` (``something-something-v2-*.json`` accepted) lists of ``{id, label,
    template, placeholders}``; videos ``<id>.webm`` in ``root`` or ``root/20bn-something-something-v2``."""
    col = _Collector(Path(root))
    labels_file = _find(col.root, ["labels.json", "something-something-v2-labels.json"])
    if labels_file is None:
        raise DataError(f"{root}: labels.json not found (is this a Something-Something v2 layout?)")
    split_name = {"train": "train", "test": "validation", "validation": "validation"}.get(subset)
    if split_name is None:
        raise DataError(f"SSv2 subset must be train or validation, got {subset!r}")
    list_file = _find(col.root, [f"{split_name}.json", f"something-something-v2-{split_name}.json"])
    if list_file is None:
        raise DataError(f"{root}: {split_name}.json not found")
    try:
        label_map = {k: int(v) for k, v in json.loads(labels_file.read_text()).items()}
        entries = json.loads(list_file.read_text())
    except (json.JSONDecodeError, ValueError, AttributeError) as exc:
        raise DataError(f"{labels_file} / {list_file}: invalid JSON ({exc})") from exc
    classes = [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
    vdirs = [col.root / "20bn-something-something-v2", col.root]
    vdirs = [d for d in vdirs if d.is_dir()]
    for n, entry in enumerate(entries):
        where = f"{list_file}[{n}]"
        if not isinstance(entry, dict) or "id" not in entry:
            col.problem(where, "entry without an 'id'")
            continue
        template = _ssv2_template(entry.get("template", ""))
        if template not in label_map:
            col.problem(where, f"unknown class template {entry.get('template')!r}")
            continue
        path = col.resolve(f"{entry['id']}.webm", where, vdirs)
        if path is not None:
            col.add(path, label_map[template])
    return col.source(classes, "ssv2")


def parse_frame_list(list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> VideoSource:
    """Pre-extracted frames: lines ``<dir> <num_frames> <label>`` (label optional), frame folders
    holding ``img_00001.jpg`` / ``frame_00001.jpg`` (any ``.jpg``/``.png``, sorted)."""
    list_file = Path(list_file)
    col = _Collector(Path(root) if root else list_file.parent)
    max_label = -1
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        parts = line.split()
        if len(parts) not in (2, 3) or not parts[1].isdigit() or (len(parts) == 3 and not parts[2].isdigit()):
            col.problem(where, f"expected '<dir> <num_frames> [label]', got {line!r}")
            continue
        path = col.resolve(parts[0], where)
        if path is None:
            continue
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
            col.problem(where, f"frame folder {parts[0]!r} holds no .jpg/.png frames")
            continue
        label = int(parts[2]) if len(parts) == 3 else None
        max_label = max(max_label, label if label is not None else -1)
        col.add(path, label, num_frames=int(parts[1]))
    classes = [str(k) for k in range(max_label + 1)] if max_label >= 0 else None
    return col.source(classes, "frame_list")


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """A class list: one name per line, optionally prefixed by its 1-based index (``classInd.txt``)."""
    names = []
    for _, line in _read_lines(Path(path)):
        parts = line.split(maxsplit=1)
        names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line)
    return names


def parse_path_list(list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                    class_names: list[str] | None = None) -> VideoSource:
    """Generic list: ``<path> <label>`` split on the last whitespace (paths may hold spaces). The
    label is a 0-based integer or, with ``class_names``, a class name; a line whose last token is
    neither is a path without label (unlabeled)."""
    list_file = Path(list_file)
    col = _Collector(Path(root) if root else list_file.parent)
    index = {c: k for k, c in enumerate(class_names or [])}
    max_label = -1
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        head, _, tail = line.rpartition(" ")
        label: int | None = None
        rel = line
        if head and tail.lstrip("-").isdigit():
            rel, label = head.strip(), int(tail)
            if label < 0 or (class_names and label >= len(class_names)):
                col.problem(where, f"label {label} outside [0, {len(class_names or []) or 'inf'})")
                continue
        elif head and tail in index:
            rel, label = head.strip(), index[tail]
        elif head and class_names and (col.root / head.strip()).exists():
            col.problem(where, f"unknown class name {tail!r}")
            continue
        path = col.resolve(rel, where)
        if path is None:
            continue
        max_label = max(max_label, label if label is not None else -1)
        col.add(path, label)
    classes = class_names or ([str(k) for k in range(max_label + 1)] if max_label >= 0 else None)
    return col.source(classes, "path_list")


def detect_layout(path: str | os.PathLike[str]) -> str:
    """Guess the layout of ``path`` (a directory or a list/CSV/JSON file)."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".csv":
            return "kinetics_csv"
        lines = [line.split() for _, line in _read_lines(p)[:20]]
        if lines and all(len(t) in (2, 3) and t[1].isdigit() for t in lines) and any(len(t) == 3 for t in lines):
            return "frame_list"
        return "path_list"
    if not p.is_dir():
        raise DataError(f"{path}: no such file or directory")
    if _find(p, ["classInd.txt"]):
        return "ucf101"
    if any(p.glob("*_test_split*.txt")) or any(p.glob("*/*_test_split*.txt")):
        return "hmdb51"
    if _find(p, ["labels.json", "something-something-v2-labels.json"]):
        return "ssv2"
    top_videos = [c for c in p.iterdir() if _is_video(c)]
    subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not top_videos and subdirs and all(any(_is_video(f) for f in d.iterdir()) for d in subdirs):
        return "class_folders"
    return "folder"


def load_source(path: str | os.PathLike[str], layout: str = "auto", split: int = 1,
                subset: str = "train", root: str | None = None,
                class_names: list[str] | None = None) -> VideoSource:
    """Parse ``path`` with ``layout`` (``auto`` detects it). ``root`` is the video folder for list
    layouts (default: the list's folder)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(path)
    if layout == "folder":
        return parse_folder(path)
    if layout == "class_folders":
        return parse_class_folders(path)
    if layout == "ucf101":
        return parse_ucf101(path, split, subset)
    if layout == "hmdb51":
        return parse_hmdb51(path, split, subset)
    if layout == "kinetics_csv":
        return parse_kinetics_csv(path, root, subset)
    if layout == "ssv2":
        return parse_ssv2(path, subset)
    if layout == "frame_list":
        return parse_frame_list(path, root)
    return parse_path_list(path, root, class_names)
