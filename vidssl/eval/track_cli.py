"""``vidssl eval track``: SeCo's tracking protocol (frozen encoder + SiamFC 1x1 head) with OTB's
one-pass evaluation; one result JSON per encoder, ``track.md`` and the success / precision plots."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vidssl.errors import VidsslError
from vidssl.eval.encoders import Encoder
from vidssl.eval.results import write_result
from vidssl.eval.siamfc import FrozenFeatures, SiamFCConfig, Tracker, track, train_head
from vidssl.eval.track_data import Sequence, load_sequences, synthetic_sequences
from vidssl.eval.track_metrics import IOU_THRESHOLDS, PIXEL_THRESHOLDS, sequence_curves, summarize


def add_track_parser(esub: argparse._SubParsersAction, add_encoders, with_threads) -> None:
    p = esub.add_parser("track", help="object tracking: SiamFC 1x1 head on the frozen encoder (SeCo Table 1), "
                                      "OTB one-pass success / precision")
    add_encoders(p)
    p.add_argument("--train-data", default="synthetic", help="GOT-10k (root or split folder), OTB-100, folders of "
                                                             "frames with groundtruth.txt, videos with .txt boxes")
    p.add_argument("--train-split", default="train", help="GOT-10k split folder")
    p.add_argument("--test-data", default="synthetic", help="OTB-100 or any layout --train-data reads")
    p.add_argument("--test-split", default="val")
    p.add_argument("--backend", default="auto", help="video decoder for video-file sequences")
    p.add_argument("--synthetic-train", type=int, default=24, help="built-in training sequences")
    p.add_argument("--synthetic-test", type=int, default=8, help="built-in test sequences (other scenes)")
    p.add_argument("--synthetic-frames", type=int, default=48)
    p.add_argument("--synthetic-size", type=int, default=128)
    p.add_argument("--synthetic-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="head training steps (SiamFC: 50 GOT-10k epochs)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.1, help="SiamFC trains 1e-2 -> 1e-5 over ~330k steps")
    p.add_argument("--lr-end", type=float, default=1e-3)
    p.add_argument("--exemplar-size", type=int, default=127)
    p.add_argument("--instance-size", type=int, default=255)
    p.add_argument("--head-dim", type=int, default=256)
    p.add_argument("--level", default="high", choices=("high", "mid"),
                   help="encoder map under the head: high = last stage (SeCo), mid = the one before")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-random", action="store_true", help="no random-init reference row")
    p.add_argument("--out", default="runs/eval")
    p.set_defaults(func=with_threads(cmd_track), workers=0)


def _sequences(args: argparse.Namespace, which: str) -> list[Sequence]:
    path, split = (args.train_data, args.train_split) if which == "train" else (args.test_data, args.test_split)
    if path == "synthetic":
        count = args.synthetic_train if which == "train" else args.synthetic_test
        first = 0 if which == "train" else 100_000  # other scenes than training's
        frames = args.synthetic_frames if which == "train" else 4 * args.synthetic_frames // 3
        return synthetic_sequences(count, frames, args.synthetic_size, args.synthetic_seed, first)
    return load_sequences(path, split, args.backend)


def track_config(args: argparse.Namespace) -> SiamFCConfig:
    if not 0 < args.exemplar_size < args.instance_size or min(args.steps, args.batch_size, args.head_dim) < 1:
        raise VidsslError("tracking needs 0 < --exemplar-size < --instance-size and positive --steps, "
                          "--batch-size, --head-dim")
    return SiamFCConfig(args.exemplar_size, args.instance_size, args.level, head_dim=args.head_dim,
                        r_pos=16.0 * args.instance_size / 255, steps=args.steps, batch_size=args.batch_size,
                        lr=args.lr, lr_end=args.lr_end, seed=args.seed)


def evaluate_tracking(enc: Encoder, train: list[Sequence], test: list[Sequence], cfg: SiamFCConfig,
                      device: str = "cpu") -> dict:
    features = FrozenFeatures(enc, cfg.level).to(device)
    head, losses = train_head(features, train, cfg, enc.name)
    tracker = Tracker(features, head, cfg)
    per_sequence = {}
    for seq in test:
        pred = track(tracker, seq)
        per_sequence[seq.name] = {**sequence_curves(pred, seq.boxes, seq.visible), "boxes": pred.round(2).tolist()}
    return {"overall": summarize(per_sequence), "per_sequence": per_sequence,
            "train_loss_first": float(np.mean(losses[:10])), "train_loss_last": float(np.mean(losses[-10:]))}


def cmd_track(args: argparse.Namespace) -> int:
    from vidssl.eval.cli import device_of, encoder_info, encoder_of

    cfg = track_config(args)
    train, test = _sequences(args, "train"), _sequences(args, "test")
    specs = list(args.encoder)
    first = encoder_of(args, specs[0])
    reference = f"random:{first.backbone.arch}"
    if not args.no_random and not {reference, reference + ":0"} & set(specs):
        specs.append(reference)
    rows = []
    for spec in specs:
        enc = first if spec == specs[0] else encoder_of(args, spec)
        try:
            m = evaluate_tracking(enc, train, test, cfg, device_of(args))
        except ValueError as exc:
            raise VidsslError(f"{spec}: {exc}") from exc
        data = {"train": _describe(args, "train", train), "test": _describe(args, "test", test)}
        overall = m["overall"]
        write_result(args.out, "track", enc.name, {"encoder": encoder_info(enc), "data": data["test"],
                                                   "data_spec": data, "protocol": asdict(cfg), **m},
                     {"AUC": overall["auc"], "precision@20": overall["precision@20"]}, cfg.describe())
        rows.append((enc.name, m))
    write_report(Path(args.out), rows)
    print(f"\ntracking on {_describe(args, 'test', test)} (OTB one-pass, %)")
    print(Path(args.out, "track.md").read_text().split("\n\n")[0])
    return 0


def _describe(args: argparse.Namespace, which: str, seqs: list[Sequence]) -> str:
    path = args.train_data if which == "train" else args.test_data
    name = f"synthetic tracking (seed {args.synthetic_seed}, {args.synthetic_size}px)" if path == "synthetic" else path
    return f"{name}: {len(seqs)} sequences, {sum(len(s) for s in seqs)} frames"


def write_report(out: Path, rows: list[tuple[str, dict]]) -> None:
    """``track.md`` (overall, then per sequence) and ``track_success.png`` / ``track_precision.png``."""
    lines = ["| encoder | success AUC | precision@20 | precision AUC | mean IoU |", "|---|---:|---:|---:|---:|"]
    for name, m in rows:
        o = m["overall"]
        lines.append(f"| {name} | {100 * o['auc']:.1f} | {100 * o['precision@20']:.1f} | "
                     f"{100 * o['precision_auc']:.1f} | {100 * o['mean_iou']:.1f} |")
    seqs = list(rows[0][1]["per_sequence"])
    lines += ["", "Per sequence, success AUC / precision@20 (%):", "",
              "| sequence | " + " | ".join(n for n, _ in rows) + " |", "|---|" + "---:|" * len(rows)]
    for s in seqs:
        cells = [f"{100 * m['per_sequence'][s]['auc']:.1f} / {100 * m['per_sequence'][s]['precision@20']:.1f}"
                 for _, m in rows]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "track.md").write_text("\n".join(lines) + "\n")
    _plot(out / "track_success.png", rows, "success", IOU_THRESHOLDS, "overlap threshold", "auc")
    _plot(out / "track_precision.png", rows, "precision", PIXEL_THRESHOLDS, "centre error threshold (px)",
          "precision@20")


def _plot(path: Path, rows: list[tuple[str, dict]], curve: str, x: np.ndarray, xlabel: str, score: str) -> None:
    from vidssl.eval.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in rows:
        ax.plot(x, m["overall"][curve], label=f"{name} [{m['overall'][score]:.3f}]")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{curve} rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"{curve} plots of OPE", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

