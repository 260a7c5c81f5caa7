"""``vidssl report``: a comparison table and PNG plots from evaluation and pretraining folders.

Plots: the confusion matrix of each linear evaluation, a retrieval grid (each query's middle frame
and its top-k neighbours, green when the class matches), a 2-D PCA embedding of the test features
coloured by class, and the pretraining loss curves (``metrics.jsonl``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from vidssl.eval.results import comparison_table, load_results


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed); every plot vidssl writes uses it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    cm = torch.tensor(result["metrics"]["confusion"], dtype=torch.float)
    names = result.get("class_names") or [str(i) for i in range(len(cm))]
    norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(cm), 0.8 + 0.45 * len(cm)))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cm)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(cm)), names, fontsize=7)
    for i in range(len(cm)):
        for j in range(len(cm)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result['encoder_name']}: top-1 {100 * result['metrics']['top1']:.1f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_embedding(features: torch.Tensor, labels: torch.Tensor, names: list[str], title: str, path: Path) -> None:
    plt = pyplot()
    x = features.float() - features.float().mean(0)
    _, _, v = torch.pca_lowrank(x, q=2, center=False)
    xy = (x @ v[:, :2]).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c in range(len(names)):
        m = (labels == c).numpy()
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=12, color=cmap(c % cmap.N), label=names[c])
    ax.legend(fontsize=6, loc="best", ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _middle_frame(data, path: str) -> torch.Tensor:
    from vidssl.data.records import VideoRecord

    _, opener = data.load("train")
    reader = opener(VideoRecord(path))
    try:
        return reader.get_frames([reader.num_frames // 2])[0]
    finally:
        reader.close()


def plot_retrieval_grid(result: dict[str, Any], path: Path, queries: int = 6) -> None:
    from vidssl.eval.data import EvalData

    plt = pyplot()
    data = EvalData(**result["data_spec"])
    grid = result["grid"][:queries]
    k = len(grid[0]["neighbours"]) if grid else 0
    fig, axes = plt.subplots(len(grid), k + 1, figsize=(1.3 * (k + 1), 1.4 * len(grid)), squeeze=False)
    for r, row in enumerate(grid):
        items = [(row["query"], row["query_label"], None)] + [
            (n["path"], n["label"], n["label"] == row["query_label"]) for n in row["neighbours"]]
        for c, (p, label, match) in enumerate(items):
            ax = axes[r][c]
            ax.imshow(_middle_frame(data, p).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black" if match is None else ("green" if match else "red")
            for side in ax.spines.values():
                side.set_color(color)
                side.set_linewidth(3 if match is not None else 1)
            name = result["class_names"][label] if label >= 0 else "?"
            ax.set_title(("query: " if c == 0 else "") + name, fontsize=6, color=color)
    fig.suptitle(f"{result['encoder_name']}: R@1 {100 * result['metrics']['R@1']:.1f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read_rows(run: Path) -> tuple[list[dict], list[dict]]:
    """A run's logged rows (``metrics.jsonl``, a line cut short by an interrupted run skipped) and
    its monitor's (``monitor.csv``)."""
    rows = []
    f = run / "metrics.jsonl"
    for line in f.read_text().splitlines() if f.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    monitor = run / "monitor.csv"
    checks = list(csv.DictReader(monitor.open())) if monitor.is_file() else []
    return rows, checks


def plot_loss_curves(runs: list[Path], path: Path) -> bool:
    """Loss parts against step (left); the order heads' training accuracy and the online
    monitor's kNN top-1 (right)."""
    plt = pyplot()
    fig, (losses, accuracies) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for run in runs:
        rows, checks = _read_rows(run)
        if not rows:
            continue
        skip = ("step", "epoch", "lr", "it_s", "time_s", "skipped_videos")
        for k in [k for k in rows[0] if k not in skip]:
            ax = accuracies if k.endswith("_acc") else losses
            ax.plot([r["step"] for r in rows], [r[k] for r in rows], label=f"{run.name}: {k}",
                    lw=2 if k == "loss" else 1)
        if checks:
            accuracies.plot([int(c["step"]) for c in checks], [float(c["knn_top1"]) / 100 for c in checks],
                            "o-", label=f"{run.name}: kNN top-1 (held out)")
        drawn = True
    if drawn:
        losses.set_xlabel("step")
        losses.set_ylabel("loss")
        losses.legend(fontsize=7)
        accuracies.set_xlabel("step")
        accuracies.set_ylabel("accuracy")
        if accuracies.lines:
            accuracies.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def make_report(dirs: list[str | Path], out: str | Path) -> tuple[str, list[Path]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(dirs)
    written: list[Path] = []
    for i, r in enumerate(results):
        tag = f"{i:02d}-{r['kind']}-{r['encoder_name']}"
        if r["kind"] == "linear" and "confusion" in r.get("metrics", {}):
            plot_confusion(r, out / f"{tag}-confusion.png")
            written.append(out / f"{tag}-confusion.png")
        if r["kind"] == "retrieval" and r.get("grid"):
            plot_retrieval_grid(r, out / f"{tag}-grid.png")
            written.append(out / f"{tag}-grid.png")
        cache = r.get("test_features_cache")
        if r["kind"] in ("linear", "retrieval") and cache and Path(cache).is_file():
            d = torch.load(cache, weights_only=True)
            title = f"{r['encoder_name']} test features (PCA)"
            plot_embedding(d["features"], d["labels"], d["class_names"] or [], title, out / f"{tag}-embedding.png")
            written.append(out / f"{tag}-embedding.png")
    if plot_loss_curves([Path(d) for d in dirs], out / "loss-curves.png"):
        written.append(out / "loss-curves.png")
    table = comparison_table(results) if results else "(no evaluation results found)"
    (out / "report.md").write_text(f"# vidssl report\n\n{table}\n\n" + "".join(
        f"![{p.stem}]({p.name})\n" for p in written))
    return table, written
