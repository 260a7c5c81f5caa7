"""``vidssl bench tables``: the papers' ablation tables re-run on the built-in synthetic videos.

Each row is a method with config overrides (on its laptop config); each (row, seed) pretrains for
a fixed budget of epochs and is then evaluated on frozen features with one protocol for all rows:
linear SVM (C by cross-validation) and retrieval on the motion labels (the time-reversal twins: the
role Something-Something plays in the papers) and on the appearance labels, separately, plus the
label-free arrow-of-time and clip-order probes. Results are one JSON per run (a finished run is
never redone, so an interrupted bench resumes), then mean ± std over seeds in a markdown table per
paper table, next to the ordering the paper reports and that ordering checked claim by claim
(Welch's t-test over the seeds), and a bar plot.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vidssl.data.synthetic import FLIP_INVARIANT_PAIRS, MOTION_PAIRS
from vidssl.engine.config import CONFIG_DIR, laptop_config, load_config
from vidssl.engine.export import export_meta
from vidssl.engine.train import TrainingError
from vidssl.errors import ConfigError
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import load_encoder
from vidssl.eval.features import FeatureSet, Protocol, extract
from vidssl.eval.knn import knn_predict
from vidssl.eval.linear import linear_svm
from vidssl.eval.metrics import direction_given_pair
from vidssl.eval.order import OrderProtocol, order_probe, probe_features
from vidssl.eval.retrieval import retrieve

SEEDS = 3  # a row's seeds (0, 1, ...) unless the bench is given its own
FRAME_SEEDS = 10  # the frame methods' rows (tiny2d: well under a minute a run, training and evaluation)


@dataclass(frozen=True)
class Row:
    label: str
    method: str  # a METHODS key, or "random:ARCH" for the random-init floor
    overrides: tuple[str, ...] = ()
    seeds: int = SEEDS  # how many seeds (0 .. seeds-1) the row runs by default

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.label.lower()).strip("_")

    @property
    def config(self) -> str | None:
        """The built-in config the row starts from: the method's laptop recipe."""
        return laptop_config(self.method)

    def run_key(self, extra: list[str]) -> str:
        """The run folder's name: the method and a hash of its laptop config's text and the
        overrides, so that tables sharing a setting (the full methods in ``baselines``) share the
        run, and a changed recipe is not mistaken for a finished run."""
        recipe = (CONFIG_DIR / f"{self.config}.yaml").read_text() if self.config else ""
        digest = hashlib.sha256(json.dumps([recipe, *extra, *self.overrides]).encode()).hexdigest()[:10]
        return f"{self.method.replace(':', '_')}-{digest}"


@dataclass(frozen=True)
class Table:
    title: str
    paper: str  # the ordering the paper reports
    rows: tuple[Row, ...]
    claims: tuple[tuple[str, str], ...] = ()  # that ordering as (better row, worse row) pairs, checked on ours


TABLES: dict[str, Table] = {
    "seco": Table("SeCo ablation (SeCo Table 1)", "Inter < Inter+Intra < Inter+Intra+Order", (
        Row("random init (tiny2d)", "random:tiny2d", seeds=FRAME_SEEDS),
        Row("Inter", "seco", ("seco.losses=[inter]",), seeds=FRAME_SEEDS),
        Row("Inter+Intra", "seco", ("seco.losses=[inter, intra]",), seeds=FRAME_SEEDS),
        Row("Inter+Intra+Order", "seco", seeds=FRAME_SEEDS),
    ), (("Inter+Intra", "Inter"), ("Inter+Intra+Order", "Inter+Intra"))),
    # the 4-way order term needs N >= 3 (with fewer segments every shuffle is the identity or the
    # reversal) and SeCo's terms N >= 2, so the segments rows run N = 2..4 without the order term
    "vclr": Table("VCLR segments (VCLR Table 7), without the order term",
                  "more segments better, saturating (Table 7); the order term adds to the other three (Table 6)", (
        *(Row(f"N={n}", "vclr", (f"vclr.num_segments={n}", "vclr.losses=[video, inter, intra]"), seeds=FRAME_SEEDS)
          for n in (2, 3, 4)),
        Row("N=3 with the order term (full VCLR)", "vclr", seeds=FRAME_SEEDS),
    ), (("N=3", "N=2"), ("N=4", "N=3"), ("N=3 with the order term (full VCLR)", "N=3"))),
    # CORP's Table 6 ablates CORP_m (on Something-Something V2): tasks, clips, attention, layers
    "corp": Table("CORP ablation (CORP Table 6, on CORP_m)",
                  "both > order-only > contrast-only (6a); more clips better, K=2 < 3 < 4 (6b); decoupling > "
                  "mixed (6c); 2-layer relation MLP > 1 (6d)", (
                      Row("random init (tiny3d)", "random:tiny3d"),
                      Row("CORP_m contrast only", "corp_m", ("corp_m.losses=[contrast]",)),
                      Row("CORP_m order only", "corp_m", ("corp_m.losses=[order]",)),
                      Row("CORP_m both, K=4, decoupling, MLP 2", "corp_m"),  # the paper's default
                      Row("CORP_m K=2", "corp_m", ("corp_m.num_clips=2",)),
                      Row("CORP_m K=3", "corp_m", ("corp_m.num_clips=3",)),
                      Row("CORP_m mixed attention", "corp_m", ("corp_m.relation=mixed",)),
                      Row("CORP_m MLP 1", "corp_m", ("corp_m.mlp_layers=1",)),
                  ), (("CORP_m both, K=4, decoupling, MLP 2", "CORP_m order only"),
                      ("CORP_m order only", "CORP_m contrast only"),
                      ("CORP_m K=3", "CORP_m K=2"), ("CORP_m both, K=4, decoupling, MLP 2", "CORP_m K=3"),
                      ("CORP_m both, K=4, decoupling, MLP 2", "CORP_m mixed attention"),
                      ("CORP_m both, K=4, decoupling, MLP 2", "CORP_m MLP 1"))),
    # the same ablations on CORP_f, which the paper does not report (its Table 6e: SimCLR-based < CORP_f)
    "corp_f": Table("CORP_f ablation (Table 6's rows on CORP_f; not in the paper)",
                    "not reported for CORP_f; Table 6e: SimCLR-based < CORP_f", (
                        Row("random init (tiny3d)", "random:tiny3d"),
                        Row("SimCLR/CVRL clips", "simclr"),
                        Row("CORP_f contrast only", "corp_f", ("corp_f.losses=[contrast]",)),
                        Row("CORP_f order only", "corp_f", ("corp_f.losses=[order]",)),
                        Row("CORP_f both, decoupling, MLP 2", "corp_f"),
                        Row("CORP_f both, mixed, MLP 2", "corp_f", ("corp_f.relation=mixed",)),
                        Row("CORP_f both, decoupling, MLP 1", "corp_f", ("corp_f.mlp_layers=1",)),
                        Row("CORP_f both, decoupling, MLP 3", "corp_f", ("corp_f.mlp_layers=3",)),
                    ), (("CORP_f both, decoupling, MLP 2", "SimCLR/CVRL clips"),)),
    "mlfo": Table("MLFO ablations (MLFO Tables 2 and 3)",
                  "Table 2: combined multi-level > combined high-only > instance > w/o > one-hot > semantic; "
                  "Table 3 (R3D/S3D): feature-level TM > no TM > input-level TM", (
                      Row("random init (tiny3d)", "random:tiny3d"),
                      Row("w/o graph", "mlfo", ("mlfo.graph_targets=none",)),
                      Row("one-hot, multi-level", "mlfo", ("mlfo.graph_targets=onehot",)),
                      Row("instance, multi-level", "mlfo", ("mlfo.graph_targets=instance",)),
                      Row("semantic, multi-level", "mlfo", ("mlfo.graph_targets=semantic",)),
                      Row("combined, high level only", "mlfo", ("mlfo.graph_levels=[high]",)),
                      Row("combined, multi-level (full)", "mlfo"),
                      Row("no temporal modelling", "mlfo", ("mlfo.temporal=none",)),
                      Row("input-level temporal modelling", "mlfo", ("mlfo.temporal=input",)),
                  ), (("combined, multi-level (full)", "combined, high level only"),
                      ("combined, high level only", "instance, multi-level"), ("instance, multi-level", "w/o graph"),
                      ("w/o graph", "one-hot, multi-level"), ("one-hot, multi-level", "semantic, multi-level"),
                      ("combined, multi-level (full)", "no temporal modelling"),
                      ("no temporal modelling", "input-level temporal modelling"))),
    "baselines": Table("Methods against their baselines", "SSL > random init; MoCo-v2 < SeCo (SeCo Table 1); "
                       "SimCLR < CORP_f (CORP Table 6e); SeCo < VCLR (VCLR Table 1)", (
        Row("random init (tiny2d)", "random:tiny2d", seeds=FRAME_SEEDS),
        Row("MoCo-v2 frames", "moco", seeds=FRAME_SEEDS),
        Row("SeCo", "seco", seeds=FRAME_SEEDS),
        Row("VCLR", "vclr", seeds=FRAME_SEEDS),
        Row("random init (tiny3d)", "random:tiny3d"),
        Row("SimCLR/CVRL clips", "simclr"),
        Row("CORP_f", "corp_f"),
        Row("CORP_m", "corp_m"),
        Row("MLFO", "mlfo"),
    ), (*((method, f"random init ({arch})") for method, arch in (("MoCo-v2 frames", "tiny2d"), ("SeCo", "tiny2d"),
         ("VCLR", "tiny2d"), ("SimCLR/CVRL clips", "tiny3d"), ("CORP_f", "tiny3d"), ("CORP_m", "tiny3d"),
         ("MLFO", "tiny3d"))),
        ("SeCo", "MoCo-v2 frames"), ("CORP_f", "SimCLR/CVRL clips"), ("VCLR", "SeCo"))),
}

METRICS = ("motion_svm", "motion_r1", "motion_r5", "appearance_svm", "appearance_r1", "appearance_r5",
           "arrow", "clip_order")
HEADERS = {"motion_svm": "motion SVM", "motion_r1": "motion R@1", "motion_r5": "motion R@5",
           "appearance_svm": "appearance SVM", "appearance_r1": "appearance R@1", "appearance_r5": "appearance R@5",
           "arrow": "arrow of time", "clip_order": "clip order"}


@dataclass
class Budget:
    epochs: int = 10
    eval_clips: int = 10  # clips (3D) per video; 2D encoders use 30 frames
    eval_videos: int = 400  # the built-in set's size for evaluation (its default split: 300 train, 100 test)
    num_workers: int = 2
    extra: list[str] = field(default_factory=list)  # overrides applied to every row
    dynamics: str = "arrow"  # the built-in videos' dynamics, in pretraining and evaluation alike

    def overrides(self) -> list[str]:
        """What every row's config gets: ``extra`` and, when not the default, the dynamics."""
        return [*self.extra, *([f"data.synthetic_dynamics={self.dynamics}"] if self.dynamics != "arrow" else [])]

    def eval_data(self, labels: str) -> EvalData:
        return EvalData(labels=labels, synthetic_videos=self.eval_videos, synthetic_dynamics=self.dynamics)


def _pretrain(row: Row, seed: int, budget: Budget, out: Path) -> tuple[str, float]:
    """Train the row (an interrupted run resumes from its checkpoint); the encoder spec and the
    seconds this call took."""
    from vidssl.engine.train import train

    if row.method.startswith("random:"):
        return f"{row.method}:{seed}", 0.0
    if row.method.startswith("supervised:"):
        return _supervised(row.method.split(":", 1)[1], seed, budget, out)
    overrides = [*budget.overrides(), *row.overrides, f"train.seed={seed}", f"train.epochs={budget.epochs}",
                 f"train.out={out}", f"data.num_workers={budget.num_workers}", "train.log_every=50"]
    cfg = load_config(row.config, overrides, row.method)
    checkpoint = out / "checkpoint.pt"
    start = time.perf_counter()
    train(cfg, str(checkpoint) if checkpoint.is_file() else None)
    return str(checkpoint), time.perf_counter() - start


SUPERVISED_LR = 0.1  # TSN from scratch (fine-tuning's default 0.01 is for pretrained encoders)


def _supervised(arch: str, seed: int, budget: Budget, out: Path) -> tuple[str, float]:
    """The supervised ceiling: ``arch`` from random init, TSN-trained on the motion labels for the
    budget's epochs (flip off: the labels name directions), exported with its own test top-1
    (``finetune_top1``); its spec and seconds."""
    from vidssl.engine.export import write_export
    from vidssl.eval.finetune import FinetuneRecipe, finetune

    export = out / "supervised.safetensors"
    if export.is_file():
        return str(export), 0.0
    encoder = load_encoder(f"random:{arch}:{seed}")
    recipe = FinetuneRecipe(segments=3, clip_len=encoder.clip_len, epochs=budget.epochs, lr=SUPERVISED_LR,
                            seed=seed, flip=0.0)
    start = time.perf_counter()
    report = finetune(encoder, budget.eval_data("motion"), recipe, budget.num_workers)
    write_export(encoder.backbone, export, mean=list(encoder.mean), std=list(encoder.std),
                 input_size=encoder.input_size, frames=encoder.clip_len, stride=1, method="supervised",
                 finetune_top1=report["top1"])
    return str(export), time.perf_counter() - start


def _relabel(fs: FeatureSet, data: EvalData, subset: str) -> FeatureSet:
    """The same features with the labels of another label set of the same videos."""
    source, _ = data.load(subset)
    label = {r.path: r.label for r in source.records}
    return FeatureSet(fs.features, torch.tensor([label[p] for p in fs.paths]), fs.paths, fs.groups,
                      list(source.class_names or []), fs.skipped, fs.cache_file)


def evaluate(spec: str, budget: Budget, cache: Path) -> dict[str, float]:
    """The bench's metrics for one encoder (fractions)."""
    enc = load_encoder(spec)
    kind = "clips" if enc.backbone.kind == "3d" else "frames"
    num = budget.eval_clips if kind == "clips" else 30
    protocol = Protocol(kind, num, max(enc.clip_len, 1 if kind == "frames" else 8), enc.stride, 1, enc.input_size)
    motion = budget.eval_data("motion")
    feats = {s: extract(enc, motion, s, protocol, cache) for s in ("train", "test")}
    out: dict[str, float] = {}
    for labels in ("motion", "appearance"):
        data = budget.eval_data(labels)
        tr, te = (_relabel(feats[s], data, s) for s in ("train", "test"))
        svm = linear_svm(tr.features, tr.labels, te.features, te.labels, len(tr.class_names))
        r = retrieve(te, tr, (1, 5))["metrics"]
        knn = knn_predict(tr.features, tr.labels, te.features, len(tr.class_names))
        out.update({f"{labels}_svm": svm.report["top1"], f"{labels}_r1": r["R@1"], f"{labels}_r5": r["R@5"],
                    f"{labels}_knn": float((knn == te.labels).float().mean())})
        if labels == "motion":  # the linear SVM's choice between reversal twins, within the right pair
            cm = svm.report["confusion"]
            out["direction"] = direction_given_pair(cm, MOTION_PAIRS)
            out["direction_unflipped"] = direction_given_pair(cm, FLIP_INVARIANT_PAIRS)
    order_p = OrderProtocol(8, enc.input_size)
    probe = {s: probe_features(enc, *motion.load(s), order_p) for s in ("train", "test")}
    out.update(order_probe(probe["train"], probe["test"]))
    return out


def _result_file(row: Row, seed: int, budget: Budget, root: Path) -> Path:
    """Where (row, seed) under ``budget`` keeps its result; its run folder is the parent."""
    return root / "runs" / row.run_key(budget.overrides()) / f"seed{seed}" / "result.json"


def finished_result(row: Row, seed: int, budget: Budget, root: Path) -> dict | None:
    """The result of (row, seed) under ``budget`` if that run has finished, else ``None``."""
    result_file = _result_file(row, seed, budget, root)
    return json.loads(result_file.read_text()) if result_file.is_file() else None


def run_one(row: Row, seed: int, budget: Budget, root: Path) -> dict:
    """Pretrain and evaluate one (row, seed); reuses a finished result."""
    done = finished_result(row, seed, budget, root)
    if done is not None:
        return done
    result_file = _result_file(row, seed, budget, root)
    folder = result_file.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        spec, seconds = _pretrain(row, seed, budget, folder / "pretrain")
    except TrainingError as exc:  # a diverged setting is a result too: the table says so, the bench goes on
        print(f"[bench] {row.label} / seed {seed}: {exc}", flush=True)
        result = {"row": asdict(row), "seed": seed, "budget": asdict(budget), "metrics": None, "error": str(exc)}
    else:
        start = time.perf_counter()
        metrics = evaluate(spec, budget, root / "features")
        if row.method.startswith("supervised:"):  # the network's own test accuracy, beside its frozen features'
            metrics["finetune"] = export_meta(spec)["finetune_top1"]
        result = {"row": asdict(row), "seed": seed, "budget": asdict(budget), "metrics": metrics,
                  "pretrain_seconds": seconds, "eval_seconds": time.perf_counter() - start}
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(result_file)
    return result


def _mean_std(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f}" if len(values) < 2 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


CLAIM_METRICS = ("motion_svm", "appearance_svm")  # the papers' claims are about action recognition accuracy
CLAIM_ALPHA = 0.05  # a claim's gap is "within noise" at p >= this
CLAIM_POWER = 0.8  # the detectable gap: the one found at p < CLAIM_ALPHA this often


def ordering_verdict(better: list[float], worse: list[float], alpha: float = CLAIM_ALPHA) -> str:
    """Whether a paper's ordering ``better > worse`` holds on our runs (one value per seed each,
    fractions): ``holds`` / ``reversed`` (or ``tied``) by the means, with the p-value of Welch's t-test
    (two-sided, unequal variances), and ``within noise`` where ``p >= alpha`` or a side has a single
    seed. A gap within noise also gets the detectable gap, in points: the true gap these seeds would
    find at ``p < alpha`` with probability :data:`CLAIM_POWER`, approximately ``(t[1-alpha/2] +
    t[power]) * SE`` (Student's t quantiles at the test's Welch-Satterthwaite degrees of freedom;
    ``SE`` the gap's standard error from the observed spreads)."""
    from scipy import stats

    gap = statistics.fmean(better) - statistics.fmean(worse)
    if gap == 0:
        return "tied"
    word = "holds" if gap > 0 else "reversed"
    if min(len(better), len(worse)) < 2:
        return f"{word}, within noise (one seed)"
    var_better, var_worse = statistics.variance(better), statistics.variance(worse)
    if var_better == 0 == var_worse:
        return f"{word} (no spread)"
    test = stats.ttest_ind(better, worse, equal_var=False)
    p = float(test.pvalue)
    if p < alpha:  # two decimals, unless they would round up to alpha (p = 0.0496 reads "p < 0.05")
        shown = f"p = {p:.2f}" if round(p, 2) < alpha else f"p < {alpha:g}"
        return f"{word} ({'p < 0.001' if p < 0.001 else 'p < 0.01' if p < 0.01 else shown})"
    standard_error = math.sqrt(var_better / len(better) + var_worse / len(worse))
    detectable = (stats.t.ppf(1 - alpha / 2, test.df) + stats.t.ppf(CLAIM_POWER, test.df)) * standard_error
    return f"{word}, within noise (p = {p:.2f}; detectable gap {100 * detectable:.1f})"


def render_claims(t: Table, values: dict[str, dict[str, list[float]]]) -> list[str]:
    """The paper's orderings checked on ours: one line per claim, each of :data:`CLAIM_METRICS`
    with both means and :func:`ordering_verdict` (``values``: row label -> metric -> per-seed values;
    a row without values is reported as not run)."""
    if not t.claims:
        return []
    lines = ["", "The paper's orderings on our figures (p: Welch's t-test over the seeds, two-sided; \"within "
             f"noise\": p >= {CLAIM_ALPHA}; detectable gap: the gap in points that these seeds would find at "
             f"p < {CLAIM_ALPHA} {CLAIM_POWER:.0%} of the time):", "",
             "| paper: better > worse | " + " | ".join(HEADERS[m] for m in CLAIM_METRICS) + " |",
             "|---|" + "---|" * len(CLAIM_METRICS)]
    for better, worse in t.claims:
        cells = []
        for m in CLAIM_METRICS:
            b, w = values.get(better, {}).get(m, []), values.get(worse, {}).get(m, [])
            cells.append(f"{100 * statistics.fmean(b):.1f} vs {100 * statistics.fmean(w):.1f}: "
                         f"{ordering_verdict(b, w)}" if b and w else "not run")
        lines.append(f"| {better} > {worse} | " + " | ".join(cells) + " |")
    return lines


def render(table: str, results: dict[str, list[dict]], budget: Budget) -> str:
    """Markdown: one line per row with results (``results``: row label -> its runs)."""
    t = TABLES[table]
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = f"{seeds[0]}-{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    lines = [f"### {t.title}", "",
             f"Built-in synthetic videos; {budget.epochs} epochs of each method's laptop config "
             f"({' '.join(budget.extra) or 'no extra overrides'}); seeds {seed_text} (a row's count: runs), "
             "mean ± std; frozen features: "
             f"linear SVM top-1 (C by 3-fold CV) and R@k, test videos from unseen recording groups; "
             f"{budget.eval_clips} clips (3D) or 30 frames (2D) per video; order probes chance 50. Paper: {t.paper}.",
             "", "| row | " + " | ".join(HEADERS[m] for m in METRICS) + " | runs |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    values: dict[str, dict[str, list[float]]] = {}  # row label -> metric -> per-seed values (finished runs)
    for row in t.rows:
        mine = results.get(row.label, [])
        if not mine:
            continue
        ok = [r for r in mine if r["metrics"] is not None]
        if ok:
            values[row.label] = {m: [r["metrics"][m] for r in ok] for m in METRICS}
        cells = [_mean_std(values[row.label][m]) if ok else "—" for m in METRICS]
        failed = len(mine) - len(ok)
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {len(ok)}"
                     + (f" (+{failed} diverged)" if failed else "") + " |")
    return "\n".join(lines + render_claims(t, values)) + "\n"


def plot(table: str, results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in TABLES[table].rows if any(r["metrics"] for r in results.get(row.label, []))]
    shown = ("motion_svm", "appearance_svm", "arrow")
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 3.6))
    width = 0.8 / len(shown)
    for k, m in enumerate(shown):
        vals = [[100 * r["metrics"][m] for r in results[row.label] if r["metrics"]] for row in rows]
        means = [statistics.fmean(v) for v in vals]
        errs = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        ax.bar([i + k * width for i in range(len(rows))], means, width, yerr=errs, label=HEADERS[m], capsize=2)
    ax.set_xticks([i + width for i in range(len(rows))], [row.label for row in rows], rotation=30, ha="right",
                  fontsize=7)
    ax.set_ylabel("%")
    ax.set_title(TABLES[table].title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_tables(tables: list[str], seeds: list[int] | None, budget: Budget, root: str | Path,
               docs: str | Path | None, rows: list[str] | None = None) -> dict[str, str]:
    """Run (or reuse) every (row, seed) of ``tables``; write ``<docs>/<table>.md`` and a PNG.

    ``seeds`` applies to every row; ``None``: each row's own (``0 .. row.seeds-1``).

    ``rows`` (labels or slugs) restricts what runs; the tables still show every other row whose
    runs have finished, so that adding or refreshing a row does not drop the rest from the docs.
    Unknown tables and rows are refused before anything runs."""
    root = Path(root)
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(map(repr, unknown))}; choose from {', '.join(TABLES)}")
    if rows:
        known = {name for t in tables for row in TABLES[t].rows for name in (row.slug, row.label)}
        missing = [r for r in rows if r not in known]
        if missing:
            slugs = ", ".join(dict.fromkeys(row.slug for t in tables for row in TABLES[t].rows))
            raise ConfigError(f"unknown row(s) {', '.join(map(repr, missing))} in {', '.join(tables)}; "
                              f"rows (label or slug): {slugs}")
    rendered = {}
    for table in tables:
        results: dict[str, list[dict]] = {}
        row_seeds = {row: seeds if seeds is not None else list(range(row.seeds)) for row in TABLES[table].rows}
        for seed in sorted(set().union(*row_seeds.values())):  # seed by seed: an early stop leaves whole seeds
            for row in TABLES[table].rows:
                if seed not in row_seeds[row]:
                    continue
                if rows and row.slug not in rows and row.label not in rows:
                    done = finished_result(row, seed, budget, root)  # shown, not run
                    if done is not None:
                        results.setdefault(row.label, []).append(done)
                    continue
                print(f"[bench] {table} / {row.label} / seed {seed}", flush=True)
                results.setdefault(row.label, []).append(run_one(row, seed, budget, root))
        rendered[table] = render(table, results, budget)
        if docs:
            out = Path(docs)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{table}.md").write_text(rendered[table] + f"\n![{table}]({table}.png)\n")
            plot(table, results, out / f"{table}.png")
    return rendered
