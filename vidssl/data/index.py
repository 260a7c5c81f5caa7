"""Per-video metadata (frame count, fps, size) cached in an index file.

An entry is keyed by the video's absolute path and stamped with the file's size and modification
time; a changed file is probed again. The index lives in ``<root>/.vidssl_index.json`` when the
dataset folder is writable, else under ``$XDG_CACHE_HOME/vidssl`` (``~/.cache/vidssl``). Writes
are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vidssl.data.decoders import open_video

INDEX_NAME = ".vidssl_index.json"


@dataclass(frozen=True)
class VideoMeta:
    num_frames: int
    fps: float
    size: int
    mtime_ns: int


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    if os.path.isdir(path):  # frame folder: the number of entries and the folder's mtime
        return len(os.listdir(path)), st.st_mtime_ns
    return st.st_size, st.st_mtime_ns


def default_index_path(root: str | os.PathLike[str]) -> Path:
    root = Path(root)
    if root.is_dir() and os.access(root, os.W_OK):
        return root / INDEX_NAME
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidssl"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache / f"index-{digest}.json"


def _read_entries(file: Path) -> dict[str, VideoMeta]:
    """The index file's entries, every field type-checked (anything else raises)."""
    entries = {}
    for path, v in json.loads(file.read_text(encoding="utf-8"))["videos"].items():
        meta = VideoMeta(int(v["num_frames"]), float(v["fps"]), int(v["size"]), int(v["mtime_ns"]))
        if not isinstance(path, str) or meta.num_frames < 0 or not meta.fps >= 0:
            raise ValueError(f"bad entry {path!r}")
        entries[path] = meta
    return entries


class VideoIndex:
    """Lazy metadata cache. ``get(path)`` returns cached metadata or probes the file (raising
    :class:`~vidssl.errors.DecodeError` for an unreadable one)."""

    def __init__(self, file: str | os.PathLike[str] | None = None, backend: str = "auto") -> None:
        self.file = Path(file) if file else None
        self.backend = backend
        self._entries: dict[str, VideoMeta] = {}
        self.dirty = False
        if self.file and self.file.is_file():
            try:
                self._entries = _read_entries(self.file)
            except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
                self._entries = {}  # a damaged cache is rebuilt, never trusted
                self.dirty = True

    def get(self, path: str) -> VideoMeta:
        size, mtime = _stamp(path)
        meta = self._entries.get(path)
        if meta is not None and meta.size == size and meta.mtime_ns == mtime:
            return meta
        reader = open_video(path, self.backend)
        try:
            return self.put(path, reader.num_frames, reader.fps)
        finally:
            reader.close()

    def put(self, path: str, num_frames: int, fps: float) -> VideoMeta:
        """Record metadata read by an already open reader."""
        size, mtime = _stamp(path)
        meta = VideoMeta(num_frames, fps, size, mtime)
        if self._entries.get(path) != meta:
            self._entries[path] = meta
            self.dirty = True
        return meta

    def cached(self, path: str) -> VideoMeta | None:
        """Metadata if cached and still valid, else None (nothing is probed)."""
        meta = self._entries.get(path)
        if meta is None or not os.path.exists(path) or (meta.size, meta.mtime_ns) != _stamp(path):
            return None
        return meta

    def save(self) -> None:
        if not self.file or not self.dirty:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(self.file.name + f".tmp{os.getpid()}")
        payload = {"version": 1, "videos": {k: asdict(v) for k, v in sorted(self._entries.items())}}
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.file)
        self.dirty = False

    def __len__(self) -> int:
        return len(self._entries)
