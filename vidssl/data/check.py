"""``vidssl data check``: every unreadable, empty, too short or mislabeled entry with its reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from vidssl.data.decoders import VideoReader
from vidssl.data.index import VideoIndex
from vidssl.data.records import Problem, VideoRecord, VideoSource
from vidssl.errors import DataError, DecodeError


@dataclass
class CheckReport:
    total: int
    ok: int
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(p.reason.split(":")[0].split(" (")[0] for p in self.problems)

    def render(self) -> str:
        lines = [f"BAD  {p.where}: {p.reason}" for p in self.problems]
        lines.append(f"checked {self.total} entries: {self.ok} ok, {len(self.problems)} bad")
        for reason, n in sorted(self.counts().items()):
            lines.append(f"  {n:6d}  {reason}")
        return "\n".join(lines)


def check_source(source: VideoSource, opener: Callable[[VideoRecord], VideoReader],
                 min_frames: int = 2, index: VideoIndex | None = None) -> CheckReport:
    """Open every record, read its first, middle and last frame, and compare its length with
    ``min_frames``. Parsing problems of the source are included."""
    problems = list(source.problems)
    ok = 0
    for record in source.records:
        try:
            reader = opener(record)
            try:
                n = reader.num_frames
                if n == 0:
                    raise DecodeError(record.path, "empty: video has 0 frames")
                if index is not None and not record.path.startswith("synth://"):
                    index.put(record.path, n, reader.fps)
                reader.get_frames(sorted({0, n // 2, n - 1}))
            finally:
                reader.close()
        except DecodeError as exc:
            reason = exc.reason if exc.reason.startswith("empty") else f"unreadable: {exc.reason}"
            problems.append(Problem(record.path, reason))
            continue
        except DataError as exc:
            problems.append(Problem(record.path, str(exc)))
            continue
        if n < min_frames:
            problems.append(Problem(record.path, f"too short: {n} frame(s) < {min_frames}"))
            continue
        if record.num_frames is not None and record.num_frames != n:
            problems.append(Problem(record.path, f"frame count mismatch: list says {record.num_frames}, found {n}"))
            continue
        ok += 1
    total = ok + len(problems)
    return CheckReport(total, ok, problems)
