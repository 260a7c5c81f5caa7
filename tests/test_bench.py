from __future__ import annotations

import json

import pytest
import torch

import vidssl.bench.tables as tables
from vidssl.bench.tables import TABLES, Budget, Row, Table, run_tables
from vidssl.engine.threads import training_threads
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
    run = tmp_path / "runs" / "runs" / TABLES["tiny"].rows[1].run_key(budget.extra) / "seed1"
    result = json.loads((run / "result.json").read_text())
    assert set(tables.METRICS) <= set(result["metrics"]) and result["pretrain_seconds"] > 0
    assert all(v is None or 0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert {"motion_knn", "appearance_knn", "direction", "direction_unflipped"} <= set(result["metrics"])
    assert (run / "pretrain" / "checkpoint.pt").is_file()

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


def test_speed_bench_replays_the_methods_backbone_passes():
    from vidssl.bench.speed import SpeedSettings, measure_method, render_speed

    s = SpeedSettings(steps=1, loader_batches=1, workers=(0,),
                      overrides=["train.batch_size=4", "data.synthetic_videos=40"])
    seco = measure_method("seco", s)
    calls = seco["backbone_calls"]
    # the query view with gradient, then the three key views through the momentum encoder without,
    # in shuffle-BN's two splits
    assert calls[0] == [[4, 3, 32, 32], True]
    assert all(not grad for _, grad in calls[1:]) and sum(shape[0] for shape, _ in calls[1:]) == 3 * 4
    mlfo = measure_method("mlfo", s)
    assert mlfo["backbone_calls"] == [[[12, 3, 8, 32, 32], True]]  # clip 1, clip 2 and the global clip at once
    for row in (seco, mlfo):
        assert row["step_s"] > 0 and row["bare_s"] > 0 and row["peak_bytes"] > 0 and "0" in row["loader_batches_per_s"]
        # training with its loader at the default workers (forked), in a first epoch and a later one
        assert row["default_workers"] == 2 and all(v > 0 for v in row["train_with_loader_steps_per_s"].values())
        assert set(row["train_with_loader_steps_per_s"]) == {"first_pass", "cached"}
        low, high = row["overhead_quartiles"]
        assert low <= row["overhead"] <= high  # the median of the per-step ratios, within its quartiles
        assert row["flops"] > row["bare_flops"] > 0  # the heads' arithmetic comes on top of the backbone's
        assert row["extras_s"] > 0  # the step on replayed backbone outputs
    # timed again at a run's threads beside its 2 workers where they differ from PyTorch's: the frame
    # methods' rule (cores less workers, at least one); the clip methods keep PyTorch's (threads: -1)
    run, expected = seco["overhead_at_run_threads"], training_threads(0, 2)
    if expected in (None, torch.get_num_threads()):
        assert run is None
    else:
        assert run["threads"] == expected and run["quartiles"][0] <= run["overhead"] <= run["quartiles"][1]
    assert mlfo["overhead_at_run_threads"] is None
    cl = measure_method("corp_f", SpeedSettings(steps=1, loader_batches=1, workers=(0,), channels_last=True,
                                                overrides=s.overrides))
    assert cl["settings"]["channels_last"] and cl["step_s"] > 0  # the GPU variant's code path runs on CPU too
    text = render_speed([seco, mlfo])
    assert "| seco | tiny2d | 4 |" in text and "| mlfo | tiny3d | 4 |" in text
    assert "laptop configs with `train.batch_size=4 data.synthetic_videos=40`;" in text  # the overrides named
    # an overhead above the 1.15x goal is printed in bold, one within it plain
    over, within = dict(seco, overhead=1.2, overhead_quartiles=[1.1, 1.3]), dict(seco, overhead=1.1)
    assert "| **1.20x** (1.10-1.30) |" in render_speed([over])
    assert f"| 1.10x ({within['overhead_quartiles'][0]:.2f}-" in render_speed([within])
    assert "| 1.15x (" in render_speed([dict(seco, overhead=1.1504)])  # printed 1.15x: within the goal
    at_one = dict(seco, overhead_at_run_threads={"threads": 1, "overhead": 1.17, "quartiles": [1.1, 1.2]})
    assert "| **1.17x** (1.10-1.20), 1 thr. |" in render_speed([at_one])
    assert "| same |" in render_speed([dict(seco, overhead_at_run_threads=None)])
    assert "compile=off." in text
    graphs = dict(seco, settings=dict(seco["settings"], compile="reduce-overhead"))
    assert "compile=reduce-overhead." in render_speed([graphs])


@pytest.mark.parametrize("method", ["seco", "mlfo"])
def test_replayed_backbone_outputs_give_the_step_without_its_backbone(method):
    """The extras-alone step: the method on the recorded backbone outputs computes the same loss as
    the step it was recorded from, sends no gradient into the backbone, and leaves the recordings
    as they were (the next replay gets the same inputs)."""
    import copy

    import torch

    from vidssl.bench.speed import BackboneRecorder
    from vidssl.engine.config import load_config
    from vidssl.engine.train import build_dataset, build_method

    cfg = load_config(None, ["train.batch_size=4", "data.synthetic_videos=40"], method)
    torch.manual_seed(0)
    dataset = build_dataset(cfg)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    model = build_method(cfg, False)[0].train()
    fresh = copy.deepcopy(model)
    recorder = BackboneRecorder(model)
    with recorder.recording():
        expected, _ = model(batch["views"], batch["info"], torch.Generator().manual_seed(0))
    kept = [{k: v.clone() for k, v in out.items()} for out in recorder.outputs]
    recorder.backbones = BackboneRecorder(fresh).backbones  # the same recordings, served to the copy
    with recorder.replaying():
        loss, _ = fresh(batch["views"], batch["info"], torch.Generator().manual_seed(0))
        loss.backward()
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert all(p.grad is None for bb in recorder.backbones for p in bb.parameters())
    assert any(p.grad is not None for p in fresh.parameters())
    for out, before in zip(recorder.outputs, kept, strict=True):
        assert all(torch.equal(out[k], before[k]) and out[k].grad is None for k in out)


def test_speed_bench_reports_a_failing_method_and_goes_on():
    from vidssl.bench.speed import SpeedSettings, render_speed, run_speed

    s = SpeedSettings(steps=1, loader_batches=1, workers=(0,))
    rows = run_speed(["no_such_method", "moco"], s, isolate=False)
    assert "error" in rows[0] and "no_such_method" in rows[0]["method"] and rows[1]["method"] == "moco"
    text = render_speed(rows)
    assert "| moco |" in text and "- no_such_method: failed:" in text


def test_bare_step_times_the_recorded_backbone_passes():
    """The bound runs every recorded backbone pass (same inputs, gradient only where the method had
    it), through the loss function it is given (compiled, with --compile), and steps the optimizer."""
    import torch

    from vidssl.bench.speed import bare_loss, bare_step
    from vidssl.models.backbones import Backbone

    online, frozen = Backbone("tiny2d"), Backbone("tiny2d")
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    seen = []
    for bb in (online, frozen):
        def forward(inp: torch.Tensor, bb: Backbone = bb) -> dict[str, torch.Tensor]:
            seen.append((bb, inp, torch.is_grad_enabled()))
            return type(bb).forward_levels(bb, inp)
        bb.forward_levels = forward

    calls = [(online, x, True), (frozen, y, False), (online, y, True)]
    expected = online(x).float().mean() + online(y).float().mean()
    seen.clear()
    assert torch.allclose(bare_loss(calls), expected)
    assert seen == [(online, x, True), (frozen, y, False), (online, y, True)]

    before = [p.clone() for p in online.parameters()]
    frozen_before = [p.clone() for p in frozen.parameters()]
    optimizer = torch.optim.SGD(online.parameters(), lr=0.1)
    losses = []

    def loss_fn() -> torch.Tensor | None:
        losses.append(bare_loss(calls))
        return losses[-1]

    bare_step(loss_fn, optimizer, torch.autocast("cpu", enabled=False))
    assert len(losses) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, online.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, frozen.parameters(), strict=True))
    assert all(p.grad is None for p in online.parameters())  # zeroed after the step
    assert bare_loss([(frozen, x, False)]) is None


class _SimulatedLoader:
    """A loader whose ``workers`` start together after ``start_s`` and each make a batch in
    ``batch_s``: batch ``n`` arrives at ``start_s + (n // workers + 1) * batch_s``, and reading it
    moves a simulated clock there."""

    def __init__(self, workers: int, start_s: float = 10.0, batch_s: float = 1.0) -> None:
        self.workers, self.start_s, self.batch_s, self.now, self.read = max(1, workers), start_s, batch_s, 0.0, 0

    def __next__(self) -> int:
        arrives = self.start_s + (self.read // self.workers + 1) * self.batch_s
        self.now, self.read = max(self.now, arrives), self.read + 1
        return self.read - 1


@pytest.mark.parametrize("workers,at_least", [(0, 5), (2, 20), (8, 4), (8, 20)])
def test_loader_rate_is_the_steady_state_of_whole_rounds(workers, at_least):
    from vidssl.bench.speed import steady_batches_per_s

    batches, consumed = _SimulatedLoader(workers), []
    rate = steady_batches_per_s(batches, workers, at_least, lambda i, b: consumed.append((i, b)),
                                clock=lambda: batches.now)
    # workers / batch_s: timed from the first batch, 8 workers' first 8 batches would come in no time
    assert rate == pytest.approx(max(1, workers) / 1.0)
    timed = len(consumed) - max(1, workers)
    assert timed >= at_least and timed % max(1, workers) == 0
    assert consumed == [(i, i) for i in range(len(consumed))]  # every batch read is consumed in order


def test_bench_cli_passes_the_budget_by_name(monkeypatch, capsys):
    from vidssl.cli import main

    seen = {}

    def fake_run_tables(tables_, seeds, budget, root, docs, rows):
        seen.update(tables=tables_, seeds=seeds, budget=budget, root=root, docs=docs, rows=rows)
        return {"corp": "table text"}

    monkeypatch.setattr(tables, "run_tables", fake_run_tables)
    assert main(["bench", "tables", "--tables", "corp", "--seeds", "0,1", "--epochs", "3", "--workers", "1",
                 "--eval-clips", "4", "--docs", "", "train.batch_size=32"]) == 0
    b = seen["budget"]
    assert (b.epochs, b.eval_clips, b.eval_videos, b.num_workers, b.extra) == (3, 4, 400, 1, ["train.batch_size=32"])
    assert seen["seeds"] == [0, 1] and seen["docs"] is None and "table text" in capsys.readouterr().out
    assert main(["bench", "tables", "--tables", "corp"]) == 0
    assert seen["seeds"] is None and seen["budget"].epochs == 10  # each row's own seeds


def test_speed_cli_compile_takes_an_optional_mode_and_checks_it(monkeypatch, capsys, tmp_path):
    from vidssl.bench import speed
    from vidssl.cli import main

    seen = []
    monkeypatch.setattr(speed, "run_speed", lambda methods, s: seen.append((methods, s)) or [])
    monkeypatch.setattr(speed, "render_speed", lambda rows: "")
    monkeypatch.setattr(speed, "write_speed", lambda rows, out, name: out)
    for flags in (["--compile", "reduce-overhead"], ["--compile"], []):
        assert main(["bench", "speed", "--methods", "seco", *flags, "--out", str(tmp_path)]) == 0
    assert [s.compile for _, s in seen] == ["reduce-overhead", "default", None]
    assert main(["bench", "speed", "--compile", "reduce_overhead", "--out", str(tmp_path)]) == 2
    assert "--compile: 'reduce_overhead' is not one of default, reduce-overhead" in capsys.readouterr().err
    assert main(["bench", "speed", "--name", "../speed", "--out", str(tmp_path)]) == 2
    assert "--name: '../speed' is not a file name" in capsys.readouterr().err
    assert len(seen) == 3


def test_ordering_verdict_is_welchs_t_test():
    import math

    from scipy import stats

    from vidssl.bench.tables import ordering_verdict

    def p_two_sided_df4(t: float) -> float:  # Student's t with 4 degrees of freedom, in closed form
        x = t / math.sqrt(t * t + 4)
        return 1 - x * (3 - x * x) / 2

    # three seeds a side with equal variances 0.01: Welch's t = gap / sqrt(2 * 0.01 / 3), 4 degrees of freedom
    better = [0.3, 0.4, 0.5]
    p_small, p_large = p_two_sided_df4(0.2 / math.sqrt(0.02 / 3)), p_two_sided_df4(0.3 / math.sqrt(0.02 / 3))
    assert f"{p_small:.2f}" == "0.07" and f"{p_large:.2f}" == "0.02"
    # within noise, the detectable gap: (t[0.975] + t[0.8]) * SE, Student's t quantiles at 4 degrees of freedom
    detectable = (2.776445 + 0.940965) * math.sqrt(0.02 / 3)
    assert f"{100 * detectable:.1f}" == "30.4"
    assert ordering_verdict(better, [0.1, 0.2, 0.3]) == f"holds, within noise (p = {p_small:.2f}; detectable gap 30.4)"
    # unequal spreads and counts: Welch-Satterthwaite df = (a + b)^2 / (a^2/2 + b^2/3), a = 0.01/3, b = 0.04/4
    a, b = 0.01 / 3, 0.04 / 4
    df = (a + b) ** 2 / (a * a / 2 + b * b / 3)
    assert df == pytest.approx(4.5714, abs=1e-4)  # not the pooled test's 5
    detectable = (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(a + b)
    assert ordering_verdict(better, [0.2, 0.2, 0.2, 0.6]) == ("holds, within noise (p = 0.43; detectable gap "
                                                              f"{100 * detectable:.1f})")
    assert ordering_verdict(better, [0.0, 0.1, 0.2]) == f"holds (p = {p_large:.2f})"
    assert ordering_verdict([0.0, 0.1, 0.2], better) == f"reversed (p = {p_large:.2f})"
    assert ordering_verdict([0.1, 0.1, 0.1], [0.2, 0.2, 0.2]) == "reversed (no spread)"
    assert 0.001 < p_two_sided_df4(0.4 / math.sqrt(0.02 / 3)) < 0.01  # 0.0078
    assert ordering_verdict([0.7, 0.8, 0.9], [0.3, 0.4, 0.5]) == "holds (p < 0.01)"
    assert ordering_verdict([0.50, 0.51, 0.52], [0.20, 0.21, 0.22]) == "holds (p < 0.001)"  # t = 36.7, df 4
    assert ordering_verdict([0.5], [0.1, 0.2]) == "holds, within noise (one seed)"
    # below alpha but 0.05 at two decimals: said as below it, not as "p = 0.05"
    from scipy import stats
    near = [0.20, 0.30, 0.40], [0.00, 0.09, 0.16]
    assert 0.045 <= stats.ttest_ind(*near, equal_var=False).pvalue < 0.05
    assert ordering_verdict(*near) == "holds (p < 0.05)"
    assert ordering_verdict([0.25, 0.75], [0.5, 0.5]) == "tied"


def test_every_claim_names_rows_of_its_table():
    for name, table in TABLES.items():
        labels = {row.label for row in table.rows}
        assert table.claims, name
        for better, worse in table.claims:
            assert {better, worse} <= labels and better != worse, (name, better, worse)


def test_rendered_table_checks_the_papers_orderings(monkeypatch):
    monkeypatch.setitem(TABLES, "tiny", Table("tiny table", "A > B, B > C", (
        Row("A", "seco"), Row("B", "seco", ("seco.losses=[inter]",)), Row("C", "moco")),
        (("A", "B"), ("B", "C"))))

    def runs(motion: list[float], appearance: list[float]) -> list[dict]:
        return [{"seed": k, "metrics": {**dict.fromkeys(tables.METRICS, 0.5), "motion_svm": m, "appearance_svm": a}}
                for k, (m, a) in enumerate(zip(motion, appearance, strict=True))]

    text = tables.render("tiny", {"A": runs([0.3, 0.4, 0.5], [0.3, 0.4, 0.5]),
                                  "B": runs([0.1, 0.2, 0.3], [0.35, 0.45, 0.55])}, Budget())
    assert "Paper: A > B, B > C." in text
    assert ("| A > B | 40.0 vs 20.0: holds, within noise (p = 0.07; detectable gap 30.4) "
            "| 40.0 vs 45.0: reversed, within noise (p = 0.57; detectable gap 30.4) |") in text
    assert "| B > C | not run | not run |" in text  # C has no runs


def test_bench_all_writes_the_laptop_report_and_every_table(monkeypatch, tmp_path):
    from vidssl.bench import speed
    from vidssl.cli import main

    seen = {}
    monkeypatch.setattr(speed, "run_speed", lambda methods, s: seen.update(methods=methods, speed=s) or [])
    monkeypatch.setattr(speed, "render_speed", lambda rows: "report")

    def fake_run_tables(tables_, seeds, budget, root, docs, rows):
        seen.update(tables=tables_, seeds=seeds, epochs=budget.epochs, root=root, docs=docs)
        return {}

    monkeypatch.setattr(tables, "run_tables", fake_run_tables)
    assert main(["bench", "all", "--docs", str(tmp_path), "--out", str(tmp_path / "runs"), "--seeds", "0,1"]) == 0
    assert (tmp_path / "speed_laptop.md").read_text() == "report" and (tmp_path / "speed_laptop.json").is_file()
    assert (seen["speed"].steps, seen["speed"].loader_batches, seen["speed"].device) == (40, 20, "cpu")
    assert len(seen["methods"]) == 7
    assert seen["tables"] == list(TABLES) and seen["seeds"] == [0, 1] and seen["epochs"] == 10
    assert (seen["root"], seen["docs"]) == (str(tmp_path / "runs"), str(tmp_path))
    assert main(["bench", "all", "--docs", str(tmp_path), "--out", str(tmp_path / "runs"), "--skip-speed"]) == 0
    assert seen["seeds"] is None  # each row's own


def test_bench_rows_add_to_a_table_without_dropping_its_finished_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(TABLES, "tiny", Table("tiny table", "A > B", (
        Row("A", "seco"), Row("B", "seco", ("seco.losses=[inter]",))), (("A", "B"),)))
    trained = []
    monkeypatch.setattr(tables, "_pretrain", lambda row, seed, budget, folder: trained.append((row.label, seed))
                        or ("spec", 1.0))
    monkeypatch.setattr(tables, "evaluate", lambda spec, budget, features: dict.fromkeys(tables.METRICS, 0.5))
    monkeypatch.setattr(tables, "plot", lambda table, results, path: path.write_text("png"))
    budget = Budget(epochs=1)
    text = run_tables(["tiny"], [0, 1], budget, tmp_path, tmp_path / "docs", rows=["b"])["tiny"]  # by slug
    assert trained == [("B", 0), ("B", 1)] and "| B |" in text and "| A |" not in text
    text = run_tables(["tiny"], [0, 1], budget, tmp_path, tmp_path / "docs", rows=["A"])["tiny"]
    assert trained[2:] == [("A", 0), ("A", 1)]  # B's finished runs are shown, not run again
    assert "| A |" in text and "| B |" in text and (tmp_path / "docs" / "tiny.md").read_text().count("| 2 |") == 2
    with pytest.raises(ConfigError, match=r"unknown row\(s\) 'C' in tiny; rows \(label or slug\): a, b"):
        run_tables(["tiny"], [0], budget, tmp_path, None, rows=["A", "C"])
    with pytest.raises(ConfigError, match="unknown table"):  # refused before the valid table runs
        run_tables(["tiny", "nope"], [2], budget, tmp_path, None)
    assert len(trained) == 4


def test_bench_rows_run_their_own_seed_counts_unless_seeds_are_given(tmp_path, monkeypatch):
    monkeypatch.setitem(TABLES, "tiny", Table("tiny table", "A > B", (
        Row("A", "seco", seeds=3), Row("B", "seco", ("seco.losses=[inter]",), seeds=1)), (("A", "B"),)))
    trained = []
    monkeypatch.setattr(tables, "_pretrain", lambda row, seed, budget, folder: trained.append((row.label, seed))
                        or ("spec", 1.0))
    monkeypatch.setattr(tables, "evaluate", lambda spec, budget, features: dict.fromkeys(tables.METRICS, 0.5))
    text = run_tables(["tiny"], None, Budget(epochs=1), tmp_path, None)["tiny"]
    assert trained == [("A", 0), ("B", 0), ("A", 1), ("A", 2)]  # seed by seed, each row its own count
    assert "seeds 0-2 (a row's count: runs)" in text and "| A |" in text and text.count("| 3 |") == 1
    run_tables(["tiny"], [0, 4], Budget(epochs=1), tmp_path, None)  # given seeds: every row, seed 0 reused
    assert trained[4:] == [("A", 4), ("B", 4)]


def test_rows_sharing_runs_have_the_same_seeds():
    # a full method in its table and in baselines shares its runs: both tables must show the same seeds
    seeds_of_run: dict[str, set[int]] = {}
    for table in TABLES.values():
        for row in table.rows:
            seeds_of_run.setdefault(row.run_key([]), set()).add(row.seeds)
    assert all(len(counts) == 1 for counts in seeds_of_run.values()), seeds_of_run
    assert {row.seeds for row in TABLES["seco"].rows} == {tables.FRAME_SEEDS}  # seconds a run: the most seeds


def test_direction_given_pair_counts_only_videos_put_in_their_own_pair():
    from vidssl.eval.metrics import direction_given_pair

    cm = [[5, 3, 2, 0],   # class 0: 5 right, 3 taken for its twin (1), 2 outside the pair
          [1, 7, 0, 4],
          [0, 0, 0, 0],
          [0, 0, 6, 6]]
    assert direction_given_pair(cm, [(0, 1)]) == (5 + 7) / (5 + 7 + 3 + 1)
    assert direction_given_pair(cm, [(0, 1), (2, 3)]) == (5 + 7 + 0 + 6) / (5 + 7 + 6 + 3 + 1 + 6)
    assert direction_given_pair([[0, 0], [0, 0]], [(0, 1)]) is None


@pytest.mark.slow
def test_bench_curves_trains_reuses_runs_and_reports(tmp_path, monkeypatch):
    import vidssl.bench.curves as curves
    from vidssl.eval.encoders import load_encoder

    monkeypatch.setattr(curves, "ROWS", (Row("SeCo", "seco"), Row("supervised (tiny2d)", "supervised:tiny2d")))
    kw = dict(num_workers=0, extra=["data.synthetic_videos=40", "train.batch_size=8"], eval_videos=100)
    text = curves.run_curves([1], [0], tmp_path / "runs", tmp_path / "docs", **kw)
    assert "| SeCo |" in text and "| supervised (tiny2d) |" in text and f"{curves.STEPS_PER_EPOCH} steps" in text
    frozen, own = text.split("**CPU minutes")[0].split("**motion, the supervised network's own")
    sections = frozen.split("\n**")[1:]
    # every frozen-feature metric of every row; direction given the pair is undefined (—) when no
    # test video of those pairs was classified into its own pair, as can happen after 18 steps
    assert len(sections) == 8 and all("—" not in sec for sec in sections if not sec.startswith("direction"))
    assert "| SeCo | — |" in own and "| supervised (tiny2d) | —" not in own  # only a supervised row has its own
    assert (tmp_path / "docs" / "curves.png").stat().st_size > 1000
    export = next((tmp_path / "runs" / "epochs1").rglob("supervised.safetensors"))
    trained, random = load_encoder(str(export)), load_encoder("random:tiny2d:0")
    assert not all(torch.equal(a, b) for a, b in zip(trained.backbone.state_dict().values(),
                                                      random.backbone.state_dict().values(), strict=True))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(tables, "_pretrain", no_training)
    assert curves.run_curves([1], [0], tmp_path / "runs", None, **kw) == text


def test_bench_curves_cli_refuses_bad_budgets(capsys):
    from vidssl.cli import main

    assert main(["bench", "curves", "--epochs", "ten", "--docs", ""]) == 2
    assert "vidssl: error: --epochs/--seeds" in capsys.readouterr().err
    assert main(["bench", "curves", "--epochs", "0", "--docs", ""]) == 2
    assert main(["bench", "curves", "--rows", "nope", "--docs", ""]) == 2


def test_loader_bench_times_each_format_and_says_how_many_workers_an_h100_needs(tmp_path, capsys):
    from vidssl.bench.loader import H100_SAMPLES_PER_S, kinetics_like
    from vidssl.cli import main
    from vidssl.data.decoders import open_video

    raw = kinetics_like(tmp_path / "probe", 1, seconds=0.4)
    reader = open_video(raw / "video_000.mp4")
    assert (reader.num_frames, tuple(reader.get_frames([0]).shape[-2:])) == (10, (360, 640))
    reader.close()
    assert main(["bench", "loader", "--videos", "1", "--seconds", "2", "--samples", "1", "--methods", "seco",
                 "--work", str(tmp_path / "work"), "--out", str(tmp_path / "docs")]) == 0
    table = (tmp_path / "docs" / "loader.md").read_text()
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| seco |")]
    assert [r[2] for r in rows] == ["raw 640x360, GOP 250", "prepared 320, GOP 12", "JPEG frames 320"]
    for r in rows:
        decode, augment, per_worker = float(r[3]), float(r[4]), float(r[5])
        assert decode > 0 and augment > 0 and per_worker == pytest.approx(1000 / (decode + augment), rel=0.02)
        workers = int(r[7].rstrip(" |"))  # ceil(H100's samples/s over one worker's); the table rounds
        assert workers == pytest.approx(H100_SAMPLES_PER_S["seco"] / per_worker, rel=0.02, abs=1)
    assert main(["bench", "loader", "--methods", "nope"]) == 2
