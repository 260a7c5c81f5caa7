"""Rank-0 logging: a progress line, JSONL and CSV scalars, TensorBoard (when installed)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunLogger:
    """Writes ``metrics.jsonl`` and ``metrics.csv`` in the run folder, TensorBoard events in
    ``tb/``, and a progress line on stderr (redrawn in place on a terminal)."""

    def __init__(self, out: Path, total_steps: int, enabled: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._csv_fields: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "metrics.jsonl", "a")
        self.csv_path = out / "metrics.csv"
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def log(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        row = {"step": step, "epoch": epoch, **{k: round(v, 6) for k, v in scalars.items()},
               "it_s": round(rate, 3), "time_s": round(elapsed, 2)}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        new_file = not self.csv_path.exists()
        if self._csv_fields is None:
            self._csv_fields = list(row)
        with open(self.csv_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._csv_fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        parts = " ".join(f"{k} {v:.4g}" for k, v in scalars.items() if k not in ("lr",))
        line = (f"ep {epoch} step {step}/{self.total} {parts} lr {scalars.get('lr', 0):.3g} "
                f"{rate:.2f} it/s ETA {_fmt_eta(eta)}")
        print(("\r" + line.ljust(120)) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            print(file=sys.stderr)
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
