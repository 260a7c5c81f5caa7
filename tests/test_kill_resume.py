"""kill -9 in the middle of a run (possibly during a checkpoint write), then --resume: every
logged loss equals the uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidssl.engine.config import load_config
from vidssl.engine.train import train

ARGS = ["data.synthetic_videos=40", "data.synthetic_size=32", "data.synthetic_frames=16",
        "data.num_workers=0", "train.batch_size=8", "train.log_every=1", "augment.size=24",
        "seco.queue_size=64", "seco.head_hidden=32", "train.ckpt_every=1", "train.max_steps=10",
        "data.synthetic_clips_per_group=3"]


def logged(run: Path) -> list[tuple[int, float]]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        rows.append((r["step"], r["loss"]))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step", [2, 5])
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, kill_after_step):
    reference = tmp_path / "reference"
    train(load_config(None, ARGS + [f"train.out={reference}"]))
    expected = dict(logged(reference))

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vidssl.cli", "pretrain", "--method", "seco", "--out", str(run), *ARGS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and any(s >= kill_after_step for s, _ in logged(run)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    subprocess.run([*cmd, "--resume"], env=env, check=True, capture_output=True, timeout=300)
    rows = logged(run)
    assert {s for s, _ in rows} == set(range(1, 11))
    for step, loss in rows:  # steps logged before the kill and again after the resume included
        assert loss == expected[step], (step, loss, expected[step])
