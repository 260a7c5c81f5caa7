"""Dataset layouts (docs/data.md). Every parser returns a :class:`VideoSource` of
:class:`VideoRecord`; a bad entry (missing file, unknown class, label that disagrees with the
folder, a path outside the dataset root, a malformed line) becomes a :class:`Problem` naming the file
and line, never an exception, so ``vidssl data check`` can list them all.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidssl.data.decoders import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from vidssl.data.records import Problem, VideoRecord, VideoSource
from vidssl.errors import DataError

LAYOUTS = (
    "auto", "folder", "ucf101", "hmdb51", "kinetics_csv", "class_folders", "ssv2", "frame_list",
    "path_list", "activitynet",
)
SUBSETS = ("train", "test")
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+")


_LIST_ROOT = ", or give their folder with --root (data.root=FOLDER when pretraining)"
MAX_LABEL = 100_000  # a label beyond this is a typo, not a class (ImageNet-21k has 21,841)
_DIGITS = re.compile(r"[0-9]+")


def list_path_problem(rel: str) -> str | None:
    """Why a path written in a list, CSV or JSON may not be used, or None. The rule is about the
    text only: an absolute path or a ``..`` component would leave the dataset root; a symlink the
    user made inside the root is followed wherever it points, in every layout."""
    if not rel or "\x00" in rel:
        return "is empty or holds a NUL byte"
    if os.path.isabs(rel) or ".." in Path(rel).parts:
        return "points outside the dataset root (absolute, or with a '..' component)"
    return None


def parse_label(text: str, num_classes: int | None = None) -> int | None:
    """A 0-based integer label written in ASCII digits, below ``num_classes`` (or MAX_LABEL)."""
    if not _DIGITS.fullmatch(text):
        return None
    label = int(text)
    return label if label < (num_classes or MAX_LABEL) else None


class _Collector:
    """Accumulates records and problems; resolves list paths inside the root."""

    def __init__(self, root: Path, elsewhere: str = "") -> None:
        self.root = root.resolve()
        self.records: list[VideoRecord] = []
        self.problems: list[Problem] = []
        self.elsewhere = elsewhere  # how this layout is pointed at another video folder, for messages

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(Problem(where, reason))

    def resolve(self, rel: str, where: str, candidates: Iterable[Path] | None = None,
                suffixes: Iterable[str] = ("",)) -> Path | None:
        """The first existing ``base/rel+suffix`` for base in ``candidates`` (default: the root);
        None and a problem if ``rel`` is refused by :func:`list_path_problem` or nothing exists."""
        suffixes = tuple(suffixes)
        reason = list_path_problem(rel)
        if reason:
            self.problem(where, f"path {rel!r} {reason}")
            return None
        bases = list(candidates or (self.root,))
        for base in bases:
            for suffix in suffixes:
                path = base / f"{rel}{suffix}"
                if path.exists():
                    return path
        looked = ", ".join(str(b) for b in bases)
        self.problem(where, f"missing file {rel if suffixes == ('',) else rel + '.*'!r} (looked in {looked}; "
                            f"videos kept elsewhere: link them into one of these folders{self.elsewhere})")
        return None

    def add(self, path: Path, label: int | None, group: str | None = None,
            num_frames: int | None = None) -> None:
        self.records.append(VideoRecord(str(path), label, group, num_frames))

    def source(self, class_names: list[str] | None, layout: str) -> VideoSource:
        return VideoSource(self.records, class_names, str(self.root), layout, self.problems)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _read_lines(path: Path) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]


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


def _split_label(line: str) -> tuple[str, str | None]:
    """``<path> <token>`` split on the last whitespace (paths may hold spaces): (path, token), or
    (line, None) for a line of one token."""
    parts = line.rsplit(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (line, None)


def _read_class_index(path: Path) -> list[str]:
    """``classInd.txt``: lines ``<1-based index> <ClassName>``, in order, names unique."""
    classes: list[str] = []
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or parse_label(parts[0]) != len(classes) + 1:
            raise DataError(f"{path}:{n}: expected '<{len(classes) + 1}> <ClassName>', got {line!r}")
        if parts[1] in classes:
            raise DataError(f"{path}:{n}: class {parts[1]!r} is already line {classes.index(parts[1]) + 1}'s")
        classes.append(parts[1])
    return classes


def parse_ucf101(root: str | os.PathLike[str], split: int = 1, subset: str = "train") -> VideoSource:
    """UCF101: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v_..._gXX_cYY.avi
    <1-based label>``), ``testlist0N.txt`` (class from the folder). Split files may sit in ``root``
    or a sub-folder (``ucfTrainTestlist``); videos in ``root/UCF-101``, ``root/videos`` (mmaction2's
    layout) or ``root``."""
    if subset not in SUBSETS:
        raise DataError(f"UCF101 subset must be train or test, got {subset!r}")
    col = _Collector(Path(root))
    class_ind = _find(col.root, ["classInd.txt"])
    if class_ind is None:
        raise DataError(f"{root}: classInd.txt not found (is this a UCF101 layout?)")
    classes = _read_class_index(class_ind)
    index = {c: k for k, c in enumerate(classes)}
    list_name = f"{subset}list{split:02d}.txt"
    list_file = _find(col.root, [list_name])
    if list_file is None:
        raise DataError(f"{root}: {list_name} not found (split {split})")
    video_roots = [d for d in (col.root / "UCF-101", col.root / "videos") if d.is_dir()] + [col.root]
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        rel, token = _split_label(line)
        if token is not None and not _DIGITS.fullmatch(token):
            rel, token = line, None  # a file name with spaces and no label (a test list)
        folder_class = Path(rel).parent.name
        if folder_class not in index:
            col.problem(where, f"unknown class {folder_class!r} (not in classInd.txt)")
            continue
        label = index[folder_class]
        if token is not None:
            given = parse_label(token, len(classes) + 1)
            if not given:
                col.problem(where, f"bad label {token!r}: expected 1..{len(classes)}")
                continue
            if given - 1 != label:
                col.problem(where, f"mislabeled: label {given} ({classes[given - 1]}) "
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
            video, token = _split_label(line)
            if token not in ("0", "1", "2"):
                col.problem(where, f"expected '<video> <0|1|2>', got {line!r}")
                continue
            if token != want:
                continue
            path = col.resolve(f"{cls}/{video}", where, [vroot])
            if path is not None:
                col.add(path, k)
    return col.source(classes, "hmdb51")


def _kinetics_stem(row: dict) -> str:
    """``<ytid>_<start:06d>_<end:06d>``; ValueError naming what is wrong."""
    ytid, start, end = row.get("youtube_id"), row.get("time_start"), row.get("time_end")
    if not ytid or start is None or end is None:
        raise ValueError("a short row (youtube_id, time_start or time_end missing)")
    try:
        times = [float(start), float(end)]
    except ValueError:
        raise ValueError(f"bad time_start/time_end {start!r}, {end!r}") from None
    if not all(0 <= t < 1e6 for t in times):
        raise ValueError(f"time_start/time_end {start!r}, {end!r} outside [0, 1e6) seconds")
    return f"{ytid}_{int(times[0]):06d}_{int(times[1]):06d}"


def parse_kinetics_csv(csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                       subset: str | None = None) -> VideoSource:
    """Kinetics CSV ``label,youtube_id,time_start,time_end,split``; files
    ``<ytid>_<start:06d>_<end:06d>.<ext>`` in ``root/<label>/`` or ``root/``. Classes sorted by
    name; rows without a label (the test CSV) are unlabeled. ``subset`` filters the split column."""
    csv_path = Path(csv_path)
    col = _Collector(Path(root) if root else csv_path.parent, _LIST_ROOT)
    try:
        rows = list(csv.DictReader(_read_text(csv_path).splitlines()))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: not a CSV file ({exc})") from exc
    required = {"youtube_id", "time_start", "time_end"}
    if rows and not required <= set(rows[0]):
        raise DataError(f"{csv_path}: missing columns {sorted(required - set(rows[0]))}")
    labels = [r.get("label") or "" for r in rows]
    classes = sorted({c for c in labels if c and not list_path_problem(c) and "/" not in c})
    index = {c: k for k, c in enumerate(classes)}
    for n, (row, label) in enumerate(zip(rows, labels, strict=True), 2):
        where = f"{csv_path}:{n}"
        if subset and row.get("split") and row["split"] != subset:
            continue
        try:
            stem = _kinetics_stem(row)
        except ValueError as exc:
            col.problem(where, str(exc))
            continue
        if label and label not in index or "/" in stem:
            col.problem(where, f"label {label!r} / youtube_id {row['youtube_id']!r} is not a plain name")
            continue
        candidates = [col.root / label, col.root] if label else [col.root]
        found = col.resolve(stem, where, candidates, VIDEO_EXTENSIONS)
        if found is not None:
            col.add(found, index[label] if label else None)
    return col.source(classes or None, "kinetics_csv")


def _ssv2_template(text: str) -> str:
    return text.replace("[", "").replace("]", "")


def _read_json(path: Path, kind: type, what: str) -> Any:
    """A JSON file whose top level is a ``kind``; a DataError naming the file otherwise."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected {what}, got a {type(data).__name__}")
    return data


def _ssv2_labels(path: Path) -> list[str]:
    """``labels.json``: ``{template: id}`` with ids 0..K-1, each once; the class names in id order."""
    label_map = _read_json(path, dict, "a mapping of template -> id")
    by_id: dict[int, str] = {}
    for name, value in label_map.items():
        k = parse_label(str(value)) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
        if k is None:
            raise DataError(f"{path}: template {name!r} has id {value!r}, not a non-negative integer")
        if k in by_id:
            raise DataError(f"{path}: templates {by_id[k]!r} and {name!r} share id {k}")
        by_id[k] = name
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"{path}: ids must be 0..{len(by_id) - 1}, each once")
    return [by_id[k] for k in range(len(by_id))]


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
    classes = _ssv2_labels(labels_file)
    label_map = {c: k for k, c in enumerate(classes)}
    entries = _read_json(list_file, list, "a list of videos")
    vdirs = [d for d in (col.root / "20bn-something-something-v2", col.root) if d.is_dir()]
    for n, entry in enumerate(entries):
        where = f"{list_file}[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), (str, int)) or isinstance(entry["id"], bool):
            col.problem(where, "entry without a string or integer 'id'")
            continue
        template = entry.get("template")
        if not isinstance(template, str) or _ssv2_template(template) not in label_map:
            col.problem(where, f"unknown class template {template!r}")
            continue
        path = col.resolve(str(entry["id"]), where, vdirs, suffixes=(".webm", ".mp4"))  # .mp4: data prepare
        if path is not None:
            col.add(path, label_map[_ssv2_template(template)])
    return col.source(classes, "ssv2")


ACTIVITYNET_JSON = ("activity_net.v1-3.min.json", "activity_net.v1-3.json", "activity_net.json")
_ACTIVITYNET_SUBSETS = {"train": ("training",), "test": ("validation",), "validation": ("validation",),
                        "all": ("training", "validation", "testing")}


@dataclass(frozen=True)
class Activity:
    """One ActivityNet video's annotation: ``segments`` are ``(start, end)`` seconds with a class
    index each; ``label`` is the video's class (the one its segments cover longest)."""

    video_id: str
    subset: str
    duration: float
    segments: tuple[tuple[float, float, int], ...]

    @property
    def label(self) -> int | None:
        if not self.segments:
            return None
        cover: dict[int, float] = {}
        for start, end, k in self.segments:
            cover[k] = cover.get(k, 0.0) + end - start
        return max(sorted(cover), key=cover.__getitem__)


def _activity(vid: str, entry: Any, index: dict[str, int]) -> Activity:
    """One ``database`` entry, type-checked; ValueError naming what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("not a mapping")
    subset, duration, notes = entry.get("subset"), entry.get("duration"), entry.get("annotations", [])
    if subset not in ("training", "validation", "testing"):
        raise ValueError(f"subset {subset!r} is not training, validation or testing")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 < duration < 1e6:
        raise ValueError(f"duration {duration!r} is not a positive number of seconds")
    if not isinstance(notes, list):
        raise ValueError("annotations is not a list")
    segments = []
    for n, note in enumerate(notes):
        seg = note.get("segment") if isinstance(note, dict) else None
        ok = isinstance(seg, list) and len(seg) == 2 and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in seg)
        if not ok or not 0 <= seg[0] < seg[1]:
            raise ValueError(f"annotations[{n}]: segment {seg!r} is not [start, end] with 0 <= start < end")
        if note.get("label") not in index:
            raise ValueError(f"annotations[{n}]: label {note.get('label')!r} is not a class name")
        segments.append((float(seg[0]), min(float(seg[1]), float(duration)), index[note["label"]]))
    return Activity(vid, subset, float(duration), tuple(segments))


def read_activitynet(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, Activity], list[Problem]]:
    """ActivityNet v1.3 JSON (``database`` → id → ``subset``, ``duration``, ``annotations`` of
    ``segment`` [start, end] seconds and ``label``): the classes (sorted names of every annotation's
    label), the videos, and a problem per entry that is malformed (named ``file[database][id]``)."""
    path = Path(path)
    data = _read_json(path, dict, "a mapping with a 'database'")
    database = data.get("database")
    if not isinstance(database, dict):
        raise DataError(f"{path}: no 'database' mapping (is this an ActivityNet JSON?)")
    labels = {n.get("label") for e in database.values() if isinstance(e, dict)
              for n in (e.get("annotations") if isinstance(e.get("annotations"), list) else [])
              if isinstance(n, dict)}
    classes = sorted(c for c in labels if isinstance(c, str) and c)
    index = {c: k for k, c in enumerate(classes)}
    videos, problems = {}, []
    for vid, entry in database.items():
        try:
            if list_path_problem(vid) or "/" in vid:
                raise ValueError("the video id is not a plain name")
            videos[vid] = _activity(vid, entry, index)
        except ValueError as exc:
            problems.append(Problem(f"{path}[database][{vid!r}]", str(exc)))
    return classes, videos, problems


def activitynet_id(path: str) -> str:
    """The ActivityNet id of a video file: its name without ``v_`` and extension."""
    stem = Path(path).stem
    return stem[2:] if stem.startswith("v_") else stem


def parse_activitynet(root: str | os.PathLike[str], subset: str = "train") -> VideoSource:
    """ActivityNet v1.3: the JSON (``activity_net.v1-3.min.json``) in ``root`` (or ``root`` is the
    JSON); videos ``v_<id>.<ext>`` or ``<id>.<ext>`` in the JSON's folder, ``videos/`` or a folder
    named after the subset. train = training, test = validation (the testing subset has no labels;
    ``all`` = every subset, unlabeled where a video has no annotation). A video's class is the
    label its segments cover longest; a labelled subset's video without annotations is a problem."""
    given = Path(root)
    json_path = given if given.is_file() else _find(given, ACTIVITYNET_JSON) if given.is_dir() else None
    if json_path is None:
        raise DataError(f"{root}: no ActivityNet JSON ({', '.join(ACTIVITYNET_JSON)})")
    if subset not in _ACTIVITYNET_SUBSETS:
        raise DataError(f"ActivityNet subset must be train, test or all, got {subset!r}")
    classes, videos, problems = read_activitynet(json_path)
    col = _Collector(json_path.parent)
    col.problems += problems
    wanted = _ACTIVITYNET_SUBSETS[subset]
    for vid, act in videos.items():
        if act.subset not in wanted:
            continue
        where = f"{json_path}[database][{vid!r}]"
        if act.label is None and subset != "all":
            col.problem(where, "no annotations: no class")
            continue
        bases = [d for d in (col.root, col.root / "videos", col.root / act.subset) if d.is_dir()]
        found = next((b / f"{stem}{ext}" for b in bases for stem in (f"v_{vid}", vid) for ext in VIDEO_EXTENSIONS
                      if (b / f"{stem}{ext}").is_file()), None)
        if found is None:
            col.problem(where, f"missing video v_{vid}.* (looked in {', '.join(str(b) for b in bases)})")
            continue
        col.add(found, act.label)
    return col.source(classes or None, "activitynet")


def parse_frame_list(list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> VideoSource:
    """Pre-extracted frames: lines ``<dir> <num_frames> <label>`` (label optional), frame folders
    holding ``img_00001.jpg`` / ``frame_00001.jpg`` (any ``.jpg``/``.png``, sorted)."""
    list_file = Path(list_file)
    col = _Collector(Path(root) if root else list_file.parent, _LIST_ROOT)
    max_label = -1
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        parts = line.split()
        numbers = [parse_label(parts[1], 10**9) if len(parts) > 1 else None, *map(parse_label, parts[2:])]
        if len(parts) not in (2, 3) or None in numbers:
            col.problem(where, f"expected '<dir> <num_frames> [label < {MAX_LABEL}]', got {line!r}")
            continue
        path = col.resolve(parts[0], where)
        if path is None:
            continue
        if not path.is_dir():
            col.problem(where, f"{parts[0]!r} is not a frame folder")
            continue
        try:
            has_frames = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
        except OSError as exc:
            col.problem(where, f"cannot list frame folder {parts[0]!r} ({exc.strerror or exc})")
            continue
        if not has_frames:
            col.problem(where, f"frame folder {parts[0]!r} holds no .jpg/.png frames")
            continue
        label = numbers[1] if len(parts) == 3 else None
        max_label = max(max_label, label if label is not None else -1)
        col.add(path, label, num_frames=numbers[0])
    classes = [str(k) for k in range(max_label + 1)] if max_label >= 0 else None
    return col.source(classes, "frame_list")


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """A class list: one name per line, optionally prefixed by its 1-based index (``classInd.txt``);
    names unique."""
    names: list[str] = []
    for n, line in _read_lines(Path(path)):
        parts = line.split(maxsplit=1)
        name = parts[1] if len(parts) == 2 and _DIGITS.fullmatch(parts[0]) else line
        if name in names:
            raise DataError(f"{path}:{n}: class {name!r} is already line {names.index(name) + 1}'s")
        names.append(name)
    return names


def parse_path_list(list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                    class_names: list[str] | None = None) -> VideoSource:
    """Generic list: ``<path> <label>`` split on the last whitespace (paths may hold spaces). The
    label is a 0-based integer or, with ``class_names``, a class name; a line whose last token is
    neither is a path without label (unlabeled)."""
    list_file = Path(list_file)
    col = _Collector(Path(root) if root else list_file.parent, _LIST_ROOT)
    index = {c: k for k, c in enumerate(class_names or [])}
    max_label = -1
    for n, line in _read_lines(list_file):
        where = f"{list_file}:{n}"
        head, tail = _split_label(line)
        label: int | None = None
        rel = line
        if tail is not None and re.fullmatch(r"-?[0-9]+", tail):
            rel, label = head, parse_label(tail, len(class_names or []))
            if label is None:
                col.problem(where, f"label {tail} outside [0, {len(class_names or []) or MAX_LABEL})")
                continue
        elif tail is not None and tail in index:
            rel, label = head, index[tail]
        elif tail is not None and class_names and (col.root / head).exists():
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
        if p.name in ACTIVITYNET_JSON:
            return "activitynet"
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
    if _find(p, ACTIVITYNET_JSON):
        return "activitynet"
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
    if layout == "activitynet":
        return parse_activitynet(path, subset)
    if layout == "frame_list":
        return parse_frame_list(path, root)
    return parse_path_list(path, root, class_names)
