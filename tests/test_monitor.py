"""The online monitor: kNN against a hand-written vote, and a monitored run that trains exactly as
an unmonitored one."""

from __future__ import annotations

import csv
import math

import torch

from vidssl.eval.knn import knn_predict, knn_scores


def test_knn_predict_matches_a_hand_written_weighted_vote():
    torch.manual_seed(0)
    gallery, labels, queries = torch.randn(30, 5), torch.randint(0, 4, (30,)), torch.randn(7, 5)
    predicted = knn_predict(gallery, labels, queries, num_classes=4, k=6, temperature=0.1)
    scores = knn_scores(gallery, labels, queries, num_classes=4, k=6, temperature=0.1)
    for q, p, s in zip(queries, predicted, scores, strict=True):
        sims = [float(q @ g) / (float(q.norm()) * float(g.norm())) for g in gallery]
        nearest = sorted(range(30), key=lambda i: -sims[i])[:6]
        votes = [0.0] * 4
        for i in nearest:
            votes[int(labels[i])] += math.exp(sims[i] / 0.1)
        assert int(p) == max(range(4), key=lambda c: votes[c])
        assert torch.allclose(s, torch.tensor(votes), rtol=1e-4)


def test_knn_predict_finds_the_class_of_its_own_copy():
    gallery = torch.eye(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(knn_predict(gallery, labels, gallery, 3, k=1), labels)


def _losses(path):
    return [(row["step"], row["loss"]) for row in csv.DictReader(open(path))]


def test_a_monitored_run_logs_knn_and_trains_as_an_unmonitored_one(tmp_path):
    from vidssl.engine.config import load_config
    from vidssl.engine.train import train

    common = ["data.synthetic_videos=40", "data.synthetic_clips_per_group=2", "data.num_workers=0",
              "train.max_steps=6", "train.log_every=1"]
    plain = train(load_config("seco_laptop", [*common, f"train.out={tmp_path / 'plain'}"]))
    watched = train(load_config("seco_laptop", [*common, f"train.out={tmp_path / 'watched'}",
                                                "train.monitor_every=4", "train.monitor_videos=12"]))
    rows = list(csv.DictReader(open(watched / "monitor.csv")))
    assert [r["step"] for r in rows] == ["4", "6"]  # every 4 steps and at the last
    assert all(0 <= float(r["knn_top1"]) <= 100 for r in rows)
    assert _losses(plain / "metrics.csv") == _losses(watched / "metrics.csv")
    assert not (plain / "monitor.csv").exists()
    assert all(0 <= float(r["order_acc"]) <= 1 for r in csv.DictReader(open(plain / "metrics.csv")))
    from vidssl.eval.report import _read_rows, plot_loss_curves  # the report plots both

    rows, checks = _read_rows(watched)
    assert [r["step"] for r in rows] == list(range(1, 7)) and [c["step"] for c in checks] == ["4", "6"]
    assert plot_loss_curves([watched], tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 1000


class FakeTracker:
    """Stands in for the wandb and mlflow modules: records what the logger sends."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def init(self, **kwargs):  # wandb
        self.calls.append(("init", kwargs))
        return self

    def log(self, scalars, step):  # a wandb run
        self.calls.append(("log", dict(scalars), step))

    def finish(self):
        self.calls.append(("finish",))

    def start_run(self, run_name):  # mlflow
        self.calls.append(("start_run", run_name))

    def log_params(self, params):
        self.calls.append(("log_params", params))

    def log_metrics(self, scalars, step):
        self.calls.append(("log", dict(scalars), step))

    def end_run(self):
        self.calls.append(("finish",))


def test_wandb_and_mlflow_backends_get_every_logged_scalar(tmp_path, monkeypatch):
    import sys

    from vidssl.engine.config import load_config
    from vidssl.engine.train import train

    wandb, mlflow = FakeTracker(), FakeTracker()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    train(load_config("seco_laptop", ["data.synthetic_videos=40", "data.synthetic_clips_per_group=2",
                                      "data.num_workers=0", "train.max_steps=4", "train.log_every=2",
                                      "train.monitor_every=4", "train.monitor_videos=12",
                                      "train.loggers=[wandb, mlflow]", f"train.out={tmp_path / 'run'}"]))
    for tracker in (wandb, mlflow):
        logged = [c for c in tracker.calls if c[0] == "log"]
        assert [c[2] for c in logged] == [2, 4, 4] and tracker.calls[-1] == ("finish",)
        assert {"train/loss", "train/order", "train/order_acc"} <= set(logged[0][1])
        assert set(logged[2][1]) == {"monitor/knn_top1"}
    assert wandb.calls[0][1]["config"]["method"] == "seco" and wandb.calls[0][1]["resume"] == "allow"
    assert mlflow.calls[1][1]["seco.tau"] == "0.1"


def test_an_unknown_or_missing_backend_is_a_config_error(tmp_path, monkeypatch):
    import sys

    import pytest

    from vidssl.engine.logger import open_backends
    from vidssl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        open_backends(["tensorboardx"], tmp_path, {})
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'vidssl\[wandb\]'"):
        open_backends(["wandb"], tmp_path, {})
