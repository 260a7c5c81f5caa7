"""``vidssl bench curves``: how each method's frozen features improve with its pretraining budget.

Every method's laptop config (and MLFO without its temporal modelling: its contrast-only
counterpart, as MoCo-v2 is SeCo's and SimCLR CORP_f's), random init and the supervised ceiling are
trained on the built-in videos for each budget (a full schedule per budget: ``train.epochs``) and
evaluated with
:func:`vidssl.bench.tables.evaluate`: linear SVM and kNN on the motion and appearance labels, the
SVM's direction given the right reversal pair (all pairs, and the two a mirror image keeps), and
the arrow-of-time and clip-order probes. Results are one JSON per (row, budget, seed), reused when
finished; the report is a markdown table per metric (rows x budgets) and a plot of accuracy against
optimizer steps and against CPU minutes.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from vidssl.bench.tables import Budget, Row, _mean_std, run_one
from vidssl.engine.config import DataConfig
from vidssl.errors import ConfigError

ROWS = (
    Row("random init (tiny2d)", "random:tiny2d"),
    Row("MoCo-v2", "moco"),
    Row("SeCo", "seco"),
    Row("VCLR", "vclr"),
    Row("random init (tiny3d)", "random:tiny3d"),
    Row("SimCLR/CVRL", "simclr"),
    Row("CORP_f", "corp_f"),
    Row("CORP_m", "corp_m"),
    Row("MLFO", "mlfo"),
    Row("MLFO, no temporal modelling", "mlfo", ("mlfo.temporal=none",)),
    Row("supervised (tiny3d)", "supervised:tiny3d"),
)
METRICS = {
    "motion_svm": "motion, linear SVM", "motion_knn": "motion, kNN", "appearance_svm": "appearance, linear SVM",
    "appearance_knn": "appearance, kNN", "direction": "direction given the pair (SVM, all pairs)",
    "direction_unflipped": "direction given the pair (SVM, up/down and approach/recede)",
    "arrow": "arrow-of-time probe", "clip_order": "clip-order probe",
    "finetune": "motion, the supervised network's own test top-1 (TSN, end to end)",
}
# the built-in training split (300 of the 400 videos) at the laptop configs' batch of 16
STEPS_PER_EPOCH = len(DataConfig().synthetic().source("train")) // 16
DEFAULT_EPOCHS = (10, 50, 150)  # 200, 1000, 3000 steps


def _cell(runs: list[dict], metric: str) -> str:
    values = [r["metrics"][metric] for r in runs if r["metrics"] and r["metrics"].get(metric) is not None]
    return _mean_std(values) if values else "—"


def render(results: dict[tuple[str, int], list[dict]], epochs: list[int], seeds: list[int],
           row_names: list[str] | None = None, dynamics: str = "arrow") -> str:
    """Markdown: per metric, rows x budgets (steps), mean ± std over the seeds; then CPU minutes."""
    rows = [row for row in ROWS if any((row.label, e) in results for e in epochs)]
    head = "| row | " + " | ".join(f"{e * STEPS_PER_EPOCH} steps" for e in epochs) + " |"
    rule = "|---|" + "---:|" * len(epochs)
    lines = [f"Built-in videos ({dynamics} dynamics), each method's laptop config trained for "
             f"{', '.join(map(str, epochs))} "
             f"epochs ({STEPS_PER_EPOCH} steps each); seeds {', '.join(map(str, seeds))}; frozen features, "
             "test videos from unseen recording groups (%; chance: motion 10, appearance 20, direction and "
             "probes 50). The supervised row is TSN from random init on the motion labels for the same epochs. "
             f"Made by `vidssl bench curves --epochs {','.join(map(str, epochs))} "
             f"--seeds {','.join(map(str, seeds))}"
             + (f" --rows \"{','.join(row_names)}\"" if row_names else "")
             + (f" --dynamics {dynamics}" if dynamics != "arrow" else "") + "`."]
    for metric, title in METRICS.items():
        lines += ["", f"**{title}**", "", head, rule]
        for row in rows:
            cells = [_cell(results.get((row.label, e), []), metric) for e in epochs]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", "**CPU minutes of pretraining** (2 cores)", "", head, rule]
    for row in rows:
        cells = []
        for e in epochs:
            runs = [r for r in results.get((row.label, e), []) if r["metrics"]]
            cells.append(f"{statistics.fmean(r['pretrain_seconds'] for r in runs) / 60:.1f}" if runs else "—")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[tuple[str, int], list[dict]], epochs: list[int], path: Path) -> None:
    """Accuracy against steps (top) and against CPU minutes (bottom) for four metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("motion_svm", "direction", "arrow", "clip_order")
    fig, axes = plt.subplots(2, len(shown), figsize=(4 * len(shown), 6.5), squeeze=False)
    for row in ROWS:
        points = [(e, [r for r in results.get((row.label, e), []) if r["metrics"]]) for e in epochs]
        points = [(e, runs) for e, runs in points if runs]
        if not points:
            continue
        for k, metric in enumerate(shown):
            ys = [statistics.fmean(100 * (r["metrics"].get(metric) or 0) for r in runs) for _, runs in points]
            minutes = [statistics.fmean(r["pretrain_seconds"] for r in runs) / 60 for _, runs in points]
            style = "--" if row.method.startswith(("random", "supervised")) else "-"
            axes[0, k].plot([e * STEPS_PER_EPOCH for e, _ in points], ys, style, marker="o", label=row.label)
            axes[1, k].plot(minutes, ys, style, marker="o", label=row.label)
    for k, metric in enumerate(shown):
        axes[0, k].set_title(METRICS[metric], fontsize=8)
        axes[0, k].set_xscale("log")
        axes[0, k].set_xlabel("steps", fontsize=8)
        axes[1, k].set_xlabel("CPU minutes (2 cores)", fontsize=8)
    axes[0, 0].set_ylabel("%")
    axes[1, 0].set_ylabel("%")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_curves(epochs: list[int], seeds: list[int], root: str | Path, docs: str | Path | None,
               rows: list[str] | None = None, num_workers: int = 2, extra: list[str] | None = None,
               eval_videos: int = 400, dynamics: str = "arrow") -> str:
    """Run (or reuse) every (row, budget, seed); write ``<docs>/curves.md`` and ``curves.png``
    (``curves_<dynamics>.*`` for other dynamics than ``arrow``)."""
    known = {name for row in ROWS for name in (row.slug, row.label)}
    missing = [r for r in rows or [] if r not in known]
    if missing:
        raise ConfigError(f"unknown row(s) {', '.join(map(repr, missing))}; rows: "
                          f"{', '.join(row.slug for row in ROWS)}")
    if not epochs or min(epochs) < 1:
        raise ConfigError(f"budgets must be positive epoch counts, got {epochs}")
    root = Path(root)
    results: dict[tuple[str, int], list[dict]] = {}
    for e in sorted(epochs):  # the cheap budgets first: an early stop still leaves whole curves' starts
        budget = Budget(epochs=e, eval_videos=eval_videos, num_workers=num_workers, extra=list(extra or []),
                        dynamics=dynamics)
        for seed in seeds:
            for row in ROWS:
                if rows and row.slug not in rows and row.label not in rows:
                    continue
                print(f"[curves] {row.label} / {e} epochs / seed {seed}", flush=True)
                results.setdefault((row.label, e), []).append(run_one(row, seed, budget, root / f"epochs{e}"))
    text = render(results, sorted(epochs), seeds, rows, dynamics)
    if docs:
        out = Path(docs)
        out.mkdir(parents=True, exist_ok=True)
        name = "curves" if dynamics == "arrow" else f"curves_{dynamics}"
        title = "Learning curves" + ("" if dynamics == "arrow" else f" ({dynamics} dynamics)")
        (out / f"{name}.md").write_text(f"# {title}\n\n{text}\n![curves]({name}.png)\n")
        plot(results, sorted(epochs), out / f"{name}.png")
    return text
