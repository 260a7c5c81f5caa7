"""The one record every dataset layout yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VideoRecord:
    """One video (a file, a frame folder or a synthetic video).

    ``label`` is ``None`` for unlabeled data. ``group`` is the recording group where the layout has
    one (UCF101 ``gNN``); videos of one group are near-duplicates and must not be split across
    train/test or a retrieval gallery. ``num_frames`` is known up front only for layouts that list
    it (frame-folder lists); otherwise it is read lazily through :class:`vidssl.data.index.VideoIndex`.
    """

    path: str
    label: int | None = None
    group: str | None = None
    num_frames: int | None = None


@dataclass(frozen=True)
class Problem:
    """Something wrong with one entry of a dataset, found while parsing or checking it."""

    where: str  # a file path, or "listfile:line"
    reason: str


@dataclass
class VideoSource:
    """A parsed dataset: its records, class names, and the problems found while parsing.

    Parsers never raise on a bad entry; they record a :class:`Problem` so that ``vidssl data check``
    can list every one. Consumers that need clean data call :meth:`raise_if_problems` (strict mode)
    or skip the entries named in :attr:`problems` with a logged count.
    """

    records: list[VideoRecord]
    class_names: list[str] | None = None
    root: str = ""
    layout: str = ""
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def raise_if_problems(self) -> None:
        from vidssl.errors import DataError

        if self.problems:
            lines = "\n".join(f"  {p.where}: {p.reason}" for p in self.problems[:20])
            more = len(self.problems) - 20
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise DataError(f"{len(self.problems)} problem(s) in {self.root}:\n{lines}{tail}")
