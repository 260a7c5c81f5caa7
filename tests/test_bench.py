from __future__ import annotations

import json

import pytest

import vidssl.bench.tables as tables
from vidssl.bench.tables import TABLES, Budget, Row, Table, run_tables
from vidssl.errors import ConfigError


@pytest.mark.slow
def test_bench_tables_runs_resumes_and_reports_mean_and_std(tmp_path, monkeypatch):
    monkeypatch.setitem(TABLES, "tiny", Table("tiny table", "A > B", (
        Row("random init (tiny3d)", "random:tiny3d"),
        Row("CORP_f", "corp_f", ("corp_f.proj_hidden=32", "corp_f.mlp_hidden=16", "corp_f.heads=8")),
    )))
    budget = Budget(epochs=1, eval_clips=2, eval_videos=100, num_workers=0,
                    extra=["data.synthetic_videos=40", "train.batch_size=8"])
    rendered = run_tables(["tiny"], [0, 1], budget, tmp_path / "runs", tmp_path / "docs")
    text = rendered["tiny"]
    assert "| CORP_f |" in text and "±" in text and "Paper: A > B" in text and text.count("| 2 |") == 2
    assert (tmp_path / "docs" / "tiny.md").is_file() and (tmp_path / "docs" / "tiny.png").stat().st_size > 1000
    result = json.loads((tmp_path / "runs" / "tiny" / "corp_f" / "seed1" / "result.json").read_text())
    assert set(result["metrics"]) == set(tables.METRICS) and result["pretrain_seconds"] > 0
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert (tmp_path / "runs" / "tiny" / "corp_f" / "seed1" / "pretrain" / "checkpoint.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(tables, "_pretrain", no_training)
    assert run_tables(["tiny"], [0, 1], budget, tmp_path / "runs", None)["tiny"] == text


def test_every_table_row_builds_a_valid_config():
    from vidssl.engine.config import load_config

    for table in TABLES.values():
        for row in table.rows:
            if not row.method.startswith("random:"):
                load_config(None, list(row.overrides), row.method)
    with pytest.raises(ConfigError, match="unknown table"):
        run_tables(["nope"], [0], Budget(), "unused", None)
