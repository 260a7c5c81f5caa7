"""``vidssl eval linear|knn|retrieval|finetune|order|track|localize``: a table row per ``--encoder``
(``--features`` for localize), a JSON per evaluation and a row in ``<out>/results.md``."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vidssl.data.synthetic import DYNAMICS
from vidssl.engine.threads import intra_op_threads
from vidssl.errors import VidsslError
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import Encoder, file_hash, load_encoder
from vidssl.eval.features import FeatureSet, Protocol, extract
from vidssl.eval.localize import add_localize_parser
from vidssl.eval.results import write_result
from vidssl.eval.track_cli import add_track_parser
from vidssl.models.init import FORMATS, init_backbone


def add_encoders(p: argparse.ArgumentParser) -> None:
    """The encoders to compare, and how the command runs them."""
    p.add_argument("--encoder", action="append", required=True,
                   help="checkpoint.pt, an export (.safetensors/.pt + .json) or random:ARCH; repeat to compare")
    p.add_argument("--threads", type=threads_arg, default=0,
                   help="intra-op threads: 0 (default) the cores the workers leave, -1 PyTorch's, N")
    p.add_argument("--device", default="auto")
    p.add_argument("--init", default="", help="weights for the random:ARCH encoders (model.init's formats, e.g. "
                                              "ImageNet weights as a baseline row)")
    p.add_argument("--init-format", default="auto", choices=FORMATS)


def add_common(p: argparse.ArgumentParser) -> None:
    add_encoders(p)
    p.add_argument("--data", default="synthetic", help="dataset (train split); default: built-in synthetic videos")
    p.add_argument("--test-data", default="", help="a second list file for the test split (list layouts)")
    p.add_argument("--layout", default="auto")
    p.add_argument("--split", type=int, default=1)
    p.add_argument("--backend", default="auto")
    p.add_argument("--labels", default="motion", choices=("motion", "appearance", "arrow"), help="synthetic label set")
    p.add_argument("--synthetic-videos", type=int, default=400)
    p.add_argument("--synthetic-frames", type=int, default=64)
    p.add_argument("--synthetic-size", type=int, default=64)
    p.add_argument("--synthetic-seed", type=int, default=0)
    p.add_argument("--synthetic-clips-per-group", type=int, default=2)
    p.add_argument("--synthetic-dynamics", default="arrow", choices=DYNAMICS)
    p.add_argument("--out", default="runs/eval", help="results folder (JSON + results.md)")
    p.add_argument("--workers", type=int, default=0)


def encoder_of(args: argparse.Namespace, spec: str) -> Encoder:
    """``load_encoder(spec)``; a ``random:ARCH`` encoder takes ``--init``'s weights when given."""
    enc = load_encoder(spec)
    if not args.init:
        return enc
    if not spec.startswith("random:"):
        raise VidsslError(f"--init applies to random:ARCH encoders; {spec} has its own weights")
    report = init_backbone(enc.backbone, args.init, args.init_format)
    print(report.describe(), file=sys.stderr)
    return replace(enc, name=f"init:{Path(args.init).name}", source=f"{spec} + {args.init}",
                   fingerprint=f"{enc.fingerprint}-init-{file_hash(args.init)}")


def threads_arg(text: str) -> int:
    value = int(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be >= -1 (0: automatic, -1: PyTorch's), got {value}")
    return value


def with_threads(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An eval command run with ``--threads`` intra-op threads beside its ``--workers`` loader
    workers, by the training rule (engine/threads.py): on 2 cores with 2 workers, feature
    extraction is ~10% faster on one thread than on two (docs/evaluation.md)."""
    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        with intra_op_threads(args.threads, args.workers):
            return cmd(args)

    return run


def add_protocol(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default="auto", choices=("auto", "frames", "clips"),
                   help="auto: frames for 2D backbones, clips for 3D")
    p.add_argument("--num", type=int, default=0, help="frames (default 30) or clips (default 10)")
    p.add_argument("--clip-len", type=int, default=0, help="default: the encoder's pretraining clip length")
    p.add_argument("--stride", type=int, default=0)
    p.add_argument("--crops", type=int, default=1, choices=(1, 3))
    p.add_argument("--crop", type=int, default=0, help="default: the encoder's pretraining input size")
    p.add_argument("--cache", default="", help="feature cache folder (default: <out>/features)")


def eval_data(args: argparse.Namespace) -> EvalData:
    return EvalData(args.data, args.test_data, args.layout, args.split, args.backend, args.labels,
                    args.synthetic_videos, args.synthetic_size, args.synthetic_frames, args.synthetic_seed,
                    args.synthetic_clips_per_group, args.synthetic_dynamics)


def device_of(args: argparse.Namespace) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device


def protocol_for(args: argparse.Namespace, enc: Encoder) -> Protocol:
    kind = args.protocol if args.protocol != "auto" else ("clips" if enc.backbone.kind == "3d" else "frames")
    num = args.num or (30 if kind == "frames" else 10)
    clip_len = args.clip_len or max(enc.clip_len, 1 if enc.backbone.kind == "2d" else 8)
    return Protocol(kind, num, clip_len, args.stride or enc.stride, args.crops, args.crop or enc.input_size)


def encoder_info(enc: Encoder) -> dict:
    return {"name": enc.name, "source": enc.source, "fingerprint": enc.fingerprint, "arch": enc.backbone.arch,
            "method": enc.name}


def _features(args, enc: Encoder, data: EvalData) -> tuple[FeatureSet, FeatureSet, Protocol]:
    p = protocol_for(args, enc)
    cache = args.cache or str(Path(args.out) / "features")
    kw = {"cache_dir": cache, "num_workers": args.workers, "device": device_of(args)}
    return extract(enc, data, "train", p, **kw), extract(enc, data, "test", p, **kw), p


def _base(enc: Encoder, data: EvalData, train: FeatureSet, test: FeatureSet, p: Protocol | None) -> dict:
    out = {"encoder": encoder_info(enc), "data": data.describe(), "data_spec": asdict(data),
           "class_names": train.class_names, "n_train": len(train.paths), "n_test": len(test.paths),
           "skipped_videos": train.skipped + test.skipped, "test_features_cache": test.cache_file}
    if p is not None:
        out["protocol"] = {**asdict(p), "description": p.describe()}
    return out


def _labeled(fs: FeatureSet, what: str) -> None:
    if not fs.class_names or (fs.labels < 0).any():
        raise VidsslError(f"{what}: this evaluation needs labels, and the data has unlabeled videos")


def _print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    cols = list(rows[0][1]) if rows else []
    print(f"\n{title}")
    print("| encoder | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(f"{100 * vals[c]:.1f}" for c in cols) + " |")


def cmd_linear(args: argparse.Namespace) -> int:
    from vidssl.eval.linear import linear_probe, linear_svm

    data, rows = eval_data(args), []
    for spec in args.encoder:
        enc = encoder_of(args, spec)
        train, test, p = _features(args, enc, data)
        _labeled(train, "linear")
        n = len(train.class_names)
        base = _base(enc, data, train, test, p)
        headline = {}
        if args.classifier in ("svm", "both"):
            r = linear_svm(train.features, train.labels, test.features, test.labels, n, args.C, args.normalize)
            headline.update({"svm top1": r.report["top1"], "svm top5": r.report["top5"]})
            res = {**base, "metrics": r.report, "classifier": "linear SVM (liblinear, L2-loss)", "C": r.C,
                   "C_selection": "given" if args.C is not None else "3-fold CV on train", "cv_scores": r.cv_scores,
                   "normalization": args.normalize}
            write_result(args.out, "linear", enc.name, res, {"top1": r.report["top1"], "top5": r.report["top5"]},
                         f"SVM C={r.C:g} {args.normalize}; {p.describe()}")
        if args.classifier in ("probe", "both"):
            m = linear_probe(train.features, train.labels, test.features, test.labels, n)
            headline.update({"probe top1": m["top1"], "probe top5": m["top5"]})
            write_result(args.out, "linear", enc.name, {**base, "metrics": m, "classifier": "linear layer",
                                                        "normalization": "standard"},
                         {"top1": m["top1"], "top5": m["top5"]}, f"linear probe, z-score; {p.describe()}")
        rows.append((enc.name, headline))
    _print_table(f"linear evaluation on {data.describe()} (test split, %)", rows)
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from vidssl.eval.knn import knn_scores
    from vidssl.eval.metrics import classification_report

    data, rows = eval_data(args), []
    ks = _ints(args.k, "--k")
    if not args.temperature > 0:
        raise VidsslError(f"--temperature must be positive, got {args.temperature}")
    for spec in args.encoder:
        enc = encoder_of(args, spec)
        train, test, p = _features(args, enc, data)
        _labeled(train, "knn")
        n, headline = len(train.class_names), {}
        for k in ks:
            votes = knn_scores(train.features, train.labels, test.features, n, k, args.temperature)
            m = classification_report(votes, test.labels, n)
            headline[f"k={k} top1"] = m["top1"]
            write_result(args.out, "knn", enc.name, {**_base(enc, data, train, test, p), "metrics": m, "k": k,
                                                     "temperature": args.temperature},
                         {f"k{k} top1": m["top1"]},
                         f"weighted kNN, cosine, k {k}, T {args.temperature}; {p.describe()}")
        rows.append((enc.name, headline))
    _print_table(f"kNN on {data.describe()} (test queries, train gallery, %)", rows)
    return 0


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(k) for k in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise VidsslError(f"{flag}: positive integers separated by commas, got {text!r}")
    return values


def cmd_retrieval(args: argparse.Namespace) -> int:
    from vidssl.eval.retrieval import retrieve

    data, rows = eval_data(args), []
    ks = _ints(args.ks, "--ks")
    for spec in args.encoder:
        enc = encoder_of(args, spec)
        train, test, p = _features(args, enc, data)
        _labeled(train, "retrieval")
        r = retrieve(test, train, ks)
        write_result(args.out, "retrieval", enc.name, {**_base(enc, data, train, test, p), **r},
                     r["metrics"], f"cosine, test queries vs train gallery; {p.describe()}")
        rows.append((enc.name, r["metrics"]))
    _print_table(f"retrieval on {data.describe()} (test queries, train gallery, %)", rows)
    return 0


# CORP Sec. 4.1 semi-supervised: "similar to the linear evaluation [one clip, no jitter or blur, SGD
# momentum 0.9, no weight decay, half-cosine, 100 epochs, 10 clips x 3 crops at test], except that
# the initial learning rate is 0.2" at batch 1024; scaled linearly to the batch used.
FINETUNE_RECIPES = {
    "tsn": {"epochs": 10, "segments": 3, "lr": 0.01, "weight_decay": 5e-4, "test_crops": 1, "dropout": 0.5},
    "corp": {"epochs": 100, "segments": 1, "lr": 0.2 / 1024, "weight_decay": 0.0, "test_crops": 3, "dropout": 0.0},
}


def finetune_recipe(args: argparse.Namespace, enc: Encoder):
    """``--recipe``'s settings, each replaced by its flag where given (CORP's lr is per sample)."""
    from vidssl.eval.finetune import FinetuneRecipe

    preset = FINETUNE_RECIPES[args.recipe]
    given = {k: getattr(args, k) for k in preset if getattr(args, k, None) is not None}
    values = {**preset, **given}
    if args.recipe == "corp" and "lr" not in given:
        values["lr"] = preset["lr"] * args.batch_size
    clip_len = 1 if enc.backbone.kind == "2d" else max(enc.clip_len, 4)
    return FinetuneRecipe(values["segments"], clip_len, values["epochs"], args.batch_size, values["lr"],
                          values["weight_decay"], values["dropout"], args.test_views, values["test_crops"],
                          flip={"auto": None, "on": 0.5, "off": 0.0, "swap": 0.0}[args.flip],
                          mirror=args.flip == "swap", label_fraction=args.label_fraction,
                          subset_seed=args.subset_seed, amp=not args.no_amp)


def write_subset(out: str, data: EvalData, recipe, subset: list) -> str:
    """The fine-tuning videos as a ``path label`` list beside the results (reusable as a list file)."""
    path = Path(out) / f"subset-{recipe.label_fraction:g}-seed{recipe.subset_seed}-{data.key()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {y}\n" for p, y in subset))
    return path.name


def cmd_finetune(args: argparse.Namespace) -> int:
    from vidssl.engine.distributed import setup, teardown
    from vidssl.eval.finetune import finetune

    if not 0 < args.label_fraction <= 1:
        raise VidsslError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    data, rows = eval_data(args), []
    ctx = setup(args.device)
    try:
        for spec in args.encoder:
            enc = encoder_of(args, spec)
            name = "supervised (scratch)" if enc.name.startswith("random") else f"{enc.name} fine-tuned"
            recipe = finetune_recipe(args, enc)
            m = finetune(enc, data, recipe, args.workers, ctx)
            subset = m.pop("subset")
            if not ctx.is_main:
                continue
            base = {"encoder": encoder_info(enc), "data": data.describe(), "data_spec": asdict(data),
                    "label_fraction": recipe.label_fraction, "subset_seed": recipe.subset_seed,
                    "subset_size": len(subset), "recipe_name": args.recipe}
            if recipe.label_fraction < 1:
                base["subset_file"] = write_subset(args.out, data, recipe, subset)
            write_result(args.out, "finetune", name, {**base, "metrics": m, "recipe_text": recipe.describe()},
                         {"top1": m["top1"], "top5": m["top5"]}, recipe.describe())
            rows.append((name, {"top1": m["top1"], "top5": m["top5"]}))
    finally:
        teardown(ctx)
    if ctx.is_main:
        _print_table(f"fine-tuning on {data.describe()} (test split, %)", rows)
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    from vidssl.eval.order import OrderProtocol, order_probe, probe_features

    data, rows = eval_data(args), []
    for spec in args.encoder:
        enc = encoder_of(args, spec)
        p = OrderProtocol(args.frames, args.crop or enc.input_size)
        feats = {}
        for subset in ("train", "test"):
            source, opener = data.load(subset)
            feats[subset] = probe_features(enc, source, opener, p)
        m = order_probe(feats["train"], feats["test"])
        base = {"encoder": encoder_info(enc), "data": data.describe(), "data_spec": asdict(data),
                "protocol": {**asdict(p), "description": "logistic regression on standardised frozen features"}}
        write_result(args.out, "order", enc.name, {**base, "metrics": m}, m,
                     f"{p.frames} frames per sequence; arrow of time and two-clip order, chance 50%")
        rows.append((enc.name, m))
    _print_table(f"temporal-order probes on {data.describe()} (test split, %, chance 50)", rows)
    return 0


def add_eval_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluation protocols on frozen or fine-tuned encoders")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    p = esub.add_parser("linear", help="linear SVM and/or linear-layer probe on frozen features")
    add_common(p)
    add_protocol(p)
    p.add_argument("--classifier", default="svm", choices=("svm", "probe", "both"))
    p.add_argument("--C", type=float, default=None, help="SVM C (default: chosen by CV on the train split)")
    p.add_argument("--normalize", default="l2", choices=("l2", "standard", "none"))
    p.set_defaults(func=with_threads(cmd_linear))
    p = esub.add_parser("knn", help="weighted kNN top-1 on frozen features (test queries, train gallery)")
    add_common(p)
    add_protocol(p)
    p.add_argument("--k", default="20,200", help="neighbours; several separated by commas")
    p.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(cosine / T)")
    p.set_defaults(func=with_threads(cmd_knn))
    p = esub.add_parser("retrieval", help="test-query / train-gallery retrieval, R@k")
    add_common(p)
    add_protocol(p)
    p.add_argument("--ks", default="1,5,10,20,50")
    p.set_defaults(func=with_threads(cmd_retrieval))
    p = esub.add_parser("finetune", help="full fine-tuning: TSN (random init: supervised from scratch) or CORP's "
                                         "semi-supervised recipe, on all or a class-balanced share of the labels")
    add_common(p)
    p.add_argument("--recipe", default="tsn", choices=tuple(FINETUNE_RECIPES),
                   help="tsn: 3 segments, lr 0.01, wd 5e-4, 10 epochs; corp: one clip, lr 0.2 x batch/1024, "
                        "no wd, 100 epochs, 10 clips x 3 crops at test (the flags below override)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--segments", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=None)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=16, help="global batch (split over torchrun's ranks)")
    p.add_argument("--test-views", type=int, default=10)
    p.add_argument("--test-crops", dest="test_crops", type=int, default=None, choices=(1, 3))
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="train on this share of the train split, class-balanced, >= 1 video per class (CORP: "
                        "0.01, 0.1); the videos are written beside the result")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on GPU")
    p.add_argument("--flip", default="auto", choices=("auto", "on", "off", "swap"),
                   help="horizontal flip; auto: off where labels name a direction (SSv2, built-in motion); "
                        "swap: flip and give the mirror class (left <-> right, CW <-> CCW in class names)")
    p.set_defaults(func=with_threads(cmd_finetune))
    p = esub.add_parser("order", help="arrow-of-time and clip-order probes (no labels needed)")
    add_common(p)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--crop", type=int, default=0)
    p.set_defaults(func=with_threads(cmd_order))
    add_track_parser(esub, add_encoders, with_threads)
    add_localize_parser(esub, with_threads)
