"""Temporal action proposals on extracted features (VCLR Sec. 4.5): BMN trained on the training
videos' feature sequences, proposals for the validation videos, Soft-NMS, and ActivityNet's
proposal metrics.

- ``soft_nms``: BMN's Gaussian Soft-NMS for ActivityNet: the best remaining proposal is kept and
  every other one whose tIoU with it exceeds ``t1 + (t2 - t1) * width`` (the kept proposal's width,
  as a fraction of the video) has its score multiplied by ``exp(-tIoU^2 / alpha)``; ``alpha`` 0.4,
  ``t1`` 0.5, ``t2`` 0.9, at most 100 kept.
- ``average_recall``: ActivityNet's AR@AN (``average_recall_vs_avg_nr_proposals`` of its evaluation
  code): for an average of AN proposals per video (1-100), each video keeps the same share of its
  proposals (its top ones), a ground-truth segment is recalled at tIoU threshold θ if one kept
  proposal overlaps it by ≥ θ; recall is averaged over θ = 0.5, 0.55, ..., 0.95. AUC is the area
  under the AR-AN curve divided by the largest AN, in %.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vidssl.data.sources import Activity
from vidssl.errors import DataError
from vidssl.eval.bmn import BMN, bmn_loss, proposals, training_targets, valid_proposals
from vidssl.eval.extract import MANIFEST, rescale
from vidssl.eval.progress import Progress

TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def segment_iou(segments: np.ndarray, target: np.ndarray) -> np.ndarray:
    """tIoU of each ``(N, 2)`` segment with one ``(2,)`` target."""
    inter = np.clip(np.minimum(segments[:, 1], target[1]) - np.maximum(segments[:, 0], target[0]), 0, None)
    union = (segments[:, 1] - segments[:, 0]) + (target[1] - target[0]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def soft_nms(props: np.ndarray, alpha: float = 0.4, t1: float = 0.5, t2: float = 0.9, top_k: int = 100) -> np.ndarray:
    """``(P, 3)`` proposals ``[xmin, xmax, score]`` (positions in [0, 1]) re-scored by BMN's Soft-NMS;
    the kept ones, best first (at most ``top_k``)."""
    rest = props[np.argsort(-props[:, 2], kind="stable")].copy()
    kept = []
    while len(rest) and len(kept) < top_k:
        best = int(np.argmax(rest[:, 2]))
        top = rest[best]
        kept.append(top.copy())
        rest = np.delete(rest, best, axis=0)
        if not len(rest):
            break
        overlap = segment_iou(rest[:, :2], top[:2])
        decay = overlap > t1 + (t2 - t1) * (top[1] - top[0])
        rest[decay, 2] *= np.exp(-np.square(overlap[decay]) / alpha)
    return np.array(kept).reshape(-1, 3)


def average_recall(ground_truth: dict[str, np.ndarray], predictions: dict[str, np.ndarray],
                   max_avg: int = 100) -> dict:
    """AR@AN for AN = 1..``max_avg`` and AUC. ``ground_truth``: video -> ``(G, 2)`` segments;
    ``predictions``: video -> ``(P, 3)`` ``[start, end, score]`` (any order)."""
    videos = [v for v in ground_truth if len(ground_truth[v])]
    if not videos:
        raise DataError("no ground-truth segments to recall")
    total = sum(len(predictions.get(v, ())) for v in videos)
    if total == 0:
        raise DataError("no proposals")
    ratio = max_avg * len(videos) / total
    ious, kept = [], 0
    for v in videos:
        pred = np.asarray(predictions.get(v, np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
        pred = pred[np.argsort(-pred[:, 2], kind="stable")]
        pred = pred[:min(int(len(pred) * ratio), len(pred))]
        kept += len(pred)
        ious.append(np.stack([segment_iou(pred[:, :2], g) for g in ground_truth[v]]) if len(pred)
                    else np.zeros((len(ground_truth[v]), 0)))
    shares = np.arange(1, max_avg + 1) / max_avg * (max_avg * len(videos) / max(kept, 1))
    positives = sum(len(ground_truth[v]) for v in videos)
    recall = np.zeros((len(TIOU_THRESHOLDS), len(shares)))
    for r, threshold in enumerate(TIOU_THRESHOLDS):
        for iou in ious:
            hit = iou >= threshold
            for j, share in enumerate(shares):
                n = min(int(iou.shape[1] * share), iou.shape[1])
                recall[r, j] += np.count_nonzero(hit[:, :n].any(1)) if n else 0
    recall /= positives
    avg = recall.mean(0)
    an = shares * kept / len(videos)
    auc = 100 * float(np.trapezoid(avg, an) / an[-1])
    return {"AN": an.tolist(), "AR": avg.tolist(), "AUC": auc,
            **{f"AR@{k}": float(avg[min(range(len(an)), key=lambda j: abs(an[j] - k))]) for k in (1, 5, 10, 100)}}


@dataclass(frozen=True)
class LocalizeConfig:
    tscale: int = 100
    dscale: int = 100
    num_sample: int = 32
    per_bin: int = 3
    boundary_ratio: float = 0.5
    epochs: int = 9
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_step: int = 7  # lr x 0.1 from this epoch (BMN)
    seed: int = 0
    soft_nms_alpha: float = 0.4
    soft_nms_t1: float = 0.5
    soft_nms_t2: float = 0.9
    max_proposals: int = 100


def load_features(folder: str | Path, activities: dict[str, Activity], tscale: int) -> dict[str, torch.Tensor]:
    """``(C, tscale)`` features of the annotated videos extracted into ``folder`` (``vidssl extract``)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        entries = manifest["videos"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"{folder}: no readable {MANIFEST} (write it with vidssl extract) ({exc})") from exc
    out = {}
    for vid in activities:
        entry = entries.get(vid)
        if entry is None:
            continue
        path = folder / entry["file"]
        if path.suffix == ".npy":
            feats = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        else:
            from safetensors.torch import load_file

            feats = load_file(str(path))["features"].float()
        out[vid] = rescale(feats, tscale).T.contiguous()
    if not out:
        raise DataError(f"{folder}: none of the annotated videos has features")
    return out


def _targets(act: Activity, cfg: LocalizeConfig) -> tuple[torch.Tensor, ...]:
    seg = torch.tensor([[s / act.duration, e / act.duration] for s, e, _ in act.segments]).clamp(0, 1)
    return training_targets(seg.view(-1, 2), cfg.tscale, cfg.dscale)


def train_bmn(features: dict[str, torch.Tensor], activities: dict[str, Activity], cfg: LocalizeConfig,
              label: str = "", device: str = "cpu") -> tuple[BMN, list[float]]:
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    vids = sorted(v for v in features if activities[v].segments)
    if not vids:
        raise DataError("no training video has both features and annotations")
    targets = {v: _targets(activities[v], cfg) for v in vids}
    model = BMN(next(iter(features.values())).shape[0], cfg.tscale, cfg.dscale, cfg.num_sample, cfg.per_bin,
                cfg.boundary_ratio).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, 0.1)
    valid = valid_proposals(cfg.tscale, cfg.dscale).to(device)
    batches = math.ceil(len(vids) / cfg.batch_size)
    progress = Progress(f"training BMN on {label}", cfg.epochs * batches, "steps")
    losses = []
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(vids), generator=g).tolist()
        for b in range(batches):
            chunk = [vids[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            x = torch.stack([features[v] for v in chunk]).to(device)
            iou, start, end = (torch.stack([targets[v][k] for v in chunk]).to(device) for k in range(3))
            conf, p_start, p_end = model(x)
            loss, _ = bmn_loss(conf, p_start, p_end, iou, start, end, valid, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            progress.update()
        sched.step()
    return model.eval(), losses


@torch.no_grad()
def predict(model: BMN, features: dict[str, torch.Tensor], activities: dict[str, Activity],
            cfg: LocalizeConfig) -> dict[str, np.ndarray]:
    """Per video, up to ``max_proposals`` ``[start, end, score]`` in seconds after Soft-NMS."""
    out = {}
    device = next(model.parameters()).device
    for vid, x in features.items():
        conf, start, end = (t[0].cpu() for t in model(x[None].to(device)))
        props = soft_nms(proposals(conf, start, end).numpy().astype(np.float64), cfg.soft_nms_alpha,
                         cfg.soft_nms_t1, cfg.soft_nms_t2, cfg.max_proposals)
        props[:, :2] *= activities[vid].duration
        out[vid] = props
    return out


def evaluate(features_dir: str | Path, activities: dict[str, Activity], cfg: LocalizeConfig,
             device: str = "cpu") -> dict:
    """Train on the training subset, propose on the validation subset, AR@AN and AUC."""
    train = {v: a for v, a in activities.items() if a.subset == "training"}
    test = {v: a for v, a in activities.items() if a.subset == "validation" and a.segments}
    train_features = load_features(features_dir, train, cfg.tscale)
    model, losses = train_bmn(train_features, train, cfg, str(features_dir), device)
    test_features = load_features(features_dir, test, cfg.tscale)
    preds = predict(model, test_features, test, cfg)
    truth = {v: np.array([[s, e] for s, e, _ in test[v].segments]) for v in test_features}
    metrics = average_recall(truth, preds, cfg.max_proposals)
    return {"metrics": metrics, "config": asdict(cfg), "n_train": len(train_features),
            "n_test": len(test_features), "train_loss_first": float(np.mean(losses[:5])),
            "train_loss_last": float(np.mean(losses[-5:])),
            "proposals": {v: p[:10].round(3).tolist() for v, p in preds.items()}}


def add_localize_parser(esub, with_threads) -> None:
    p = esub.add_parser("localize", help="temporal action proposals: BMN on extracted features (VCLR Sec. 4.5), "
                                         "ActivityNet AR@AN and AUC")
    p.add_argument("--features", action="append", required=True,
                   help="a `vidssl extract` folder; repeat to compare encoders (extract random:ARCH as the floor)")
    p.add_argument("--annotations", required=True, help="ActivityNet v1.3 JSON (training -> train, validation -> test)")
    p.add_argument("--temporal-scale", type=int, default=100, help="positions per video (BMN on ActivityNet: 100)")
    p.add_argument("--num-sample", type=int, default=32, help="boundary-matching samples per proposal (BMN: 32)")
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=with_threads(cmd_localize), workers=0)


def cmd_localize(args) -> int:
    from vidssl.data.sources import read_activitynet
    from vidssl.eval.cli import device_of
    from vidssl.eval.results import write_result

    if min(args.temporal_scale, args.num_sample, args.epochs, args.batch_size) < 1:
        raise DataError("--temporal-scale, --num-sample, --epochs and --batch-size must be positive")
    cfg = LocalizeConfig(args.temporal_scale, args.temporal_scale, args.num_sample, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, lr_step=max(1, round(args.epochs * 7 / 9)),
                         seed=args.seed)
    classes, activities, problems = read_activitynet(args.annotations)
    for problem in problems:
        print(f"vidssl: skipping {problem.where}: {problem.reason}", file=sys.stderr)
    rows = []
    for folder in args.features:
        result = evaluate(folder, activities, cfg, device_of(args))
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
        name = f"{manifest['encoder']['name']} ({Path(folder).name})"
        m = result["metrics"]
        write_result(args.out, "localize", name, {"encoder": manifest["encoder"], "data": str(args.annotations),
                                                  "features": str(folder), **result},
                     {"AUC": m["AUC"] / 100, "AR@100": m["AR@100"]},
                     f"BMN T={cfg.tscale}, {cfg.epochs} epochs; Soft-NMS; AR@AN tIoU 0.5:0.05:0.95")
        rows.append((name, m))
    write_localize_report(Path(args.out), rows)
    print(Path(args.out, "localize.md").read_text())
    return 0


def write_localize_report(out: Path, rows: list[tuple[str, dict]]) -> None:
    """``localize.md`` (AUC and AR@AN per features folder) and ``localize_ar_an.png``."""
    from vidssl.eval.report import pyplot

    lines = ["| features | AUC | AR@1 | AR@5 | AR@10 | AR@100 |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {m['AUC']:.1f} | " + " | ".join(f"{100 * m[f'AR@{k}']:.1f}" for k in (1, 5, 10, 100)) + " |"
              for n, m in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "localize.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in rows:
        ax.plot(m["AN"], m["AR"], label=f"{name} [AUC {m['AUC']:.1f}]")
    ax.set_xlabel("average number of proposals per video")
    ax.set_ylabel("average recall (tIoU 0.5:0.05:0.95)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "localize_ar_an.png", dpi=120)
    plt.close(fig)
