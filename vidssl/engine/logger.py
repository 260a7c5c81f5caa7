"""Rank-0 logging: a progress line, JSONL and CSV scalars, TensorBoard (when installed), and the
optional Weights & Biases / MLflow backends of ``train.loggers``."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from vidssl.errors import ConfigError

BACKENDS = ("wandb", "mlflow")


class WandbBackend:
    """A W&B run named after the run folder; a resumed run continues it (its id is the folder's hash).
    Project: ``$WANDB_PROJECT`` (default ``vidssl``); offline with ``WANDB_MODE=offline``."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        import os

        import wandb

        run_id = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vidssl"), name=out.name, id=run_id,
                              resume="allow", dir=str(out), config=config)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowBackend:
    """An MLflow run named after the run folder, the config as its parameters (tracking URI and
    experiment: MLflow's own environment variables)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=out.name)
        flat = {f"{section}.{k}": v for section, values in config.items() if isinstance(values, dict)
                for k, v in values.items()}
        mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def open_backends(names: list[str], out: Path, config: dict[str, Any]) -> list:
    """The backends ``train.loggers`` names; a missing package is a config error naming its extra."""
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise ConfigError(f"train.loggers: unknown {bad}; choose from {list(BACKENDS)}")
    backends = []
    for name in names:
        try:
            backends.append({"wandb": WandbBackend, "mlflow": MlflowBackend}[name](out, config))
        except ImportError as exc:
            raise ConfigError(f"train.loggers: {name} is not installed (pip install 'vidssl[{name}]'): {exc}") from exc
    return backends


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _append_csv(path: Path, row: dict[str, Any], fields: list[str]) -> None:
    """One row under a header of ``fields`` (written with the file's first row)."""
    new_file = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


class RunLogger:
    """Writes ``metrics.jsonl`` and ``metrics.csv`` in the run folder, TensorBoard events in
    ``tb/``, and a progress line on stderr (redrawn in place on a terminal)."""

    def __init__(self, out: Path, total_steps: int, enabled: bool = True, start_step: int = 0,
                 backends: list | None = None) -> None:
        self.enabled = enabled
        self.backends = backends or []
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
        if self._csv_fields is None:
            self._csv_fields = list(row)
        _append_csv(self.csv_path, row, self._csv_fields)
        self._scalars("train", scalars, step)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        parts = " ".join(f"{k} {v:.4g}" for k, v in scalars.items() if k not in ("lr",))
        line = (f"ep {epoch} step {step}/{self.total} {parts} lr {scalars.get('lr', 0):.3g} "
                f"{rate:.2f} it/s ETA {format_eta(eta)}")
        print(("\r" + line.ljust(120)) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def log_monitor(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        """The online monitor's figures: ``monitor.csv``, TensorBoard ``monitor/``, a line."""
        if not self.enabled:
            return
        row = {"step": step, "epoch": epoch, **{k: round(v, 4) for k, v in scalars.items()},
               "time_s": round(time.perf_counter() - self.t0, 2)}
        _append_csv(self.csv_path.with_name("monitor.csv"), row, list(row))
        self._scalars("monitor", scalars, step)
        self.message(f"monitor at step {step}: " + " ".join(f"{k} {v:.1f}" for k, v in scalars.items()))

    def _scalars(self, prefix: str, scalars: dict[str, float], step: int) -> None:
        """To TensorBoard and every backend, as ``<prefix>/<name>``."""
        named = {f"{prefix}/{k}": v for k, v in scalars.items()}
        if self.tb is not None:
            for k, v in named.items():
                self.tb.add_scalar(k, v, step)
        for backend in self.backends:
            backend.log(named, step)

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
        for backend in self.backends:
            backend.close()
