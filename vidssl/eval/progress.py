"""A progress line with rate and ETA on stderr for evaluation loops (pretraining has its own in
:class:`vidssl.engine.logger.RunLogger`): redrawn in place on a terminal, a line per tenth of the
work otherwise (logs stay short)."""

from __future__ import annotations

import sys
import time

from vidssl.engine.logger import format_eta


class Progress:
    def __init__(self, label: str, total: int, unit: str = "videos", enabled: bool = True) -> None:
        self.label, self.total, self.unit, self.enabled = label, max(total, 1), unit, enabled
        self.done = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.next_line = 0.1

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        fraction = self.done / self.total
        if not self.tty and fraction < self.next_line and self.done < self.total:
            return
        self.next_line = (int(fraction * 10) + 1) / 10
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = f"{self.label}: {self.done}/{self.total} {self.unit} {rate:.1f}/s ETA {format_eta(eta)}"
        end = "\n" if not self.tty or self.done >= self.total else ""
        print(("\r" + line.ljust(100)) if self.tty else line, end=end, file=sys.stderr, flush=True)
