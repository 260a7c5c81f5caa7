"""The ``vidssl`` command line. Every command turns a :class:`VidsslError` into a one-line message
and exit status 2 (no traceback); ``data check`` exits 1 when it finds bad entries."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vidssl.data.synthetic import DYNAMICS
from vidssl.errors import VidsslError
from vidssl.models.init import FORMATS


def _add_source_args(p: argparse.ArgumentParser) -> None:
    from vidssl.data.sources import LAYOUTS

    p.add_argument("path", help="dataset folder, or a list/CSV/JSON file")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument("--split", type=int, default=1, help="split number (UCF101, HMDB51)")
    p.add_argument("--subset", default=None, help="train or test (default: both where the layout has splits)")
    p.add_argument("--root", default=None, help="video folder for list layouts (default: the list's folder)")
    p.add_argument("--classes", default=None, help="class list file for path lists (classInd.txt style)")
    p.add_argument("--backend", default="auto", choices=("auto", "pyav", "torchcodec", "frames"))


def _load_sources(args: argparse.Namespace) -> list:
    from vidssl.data.sources import detect_layout, load_source, read_class_names

    layout = detect_layout(args.path) if args.layout == "auto" else args.layout
    classes = read_class_names(args.classes) if args.classes else None
    has_subsets = layout in ("ucf101", "hmdb51", "ssv2", "kinetics_csv", "activitynet")
    subsets = [args.subset] if args.subset else (["train", "test"] if has_subsets else ["train"])
    if layout == "kinetics_csv" and not args.subset:
        subsets = [None]
    return [load_source(args.path, layout, args.split, s, args.root, classes) for s in subsets]


def cmd_data_synth(args: argparse.Namespace) -> int:
    from vidssl.data.synthetic import SyntheticVideos

    if args.untrimmed:
        return _synth_untrimmed(args)
    videos = SyntheticVideos(num_videos=args.videos or 400, size=args.size, frames=args.frames or 64, seed=args.seed,
                             clips_per_group=args.clips_per_group, dynamics=args.dynamics)
    root = videos.write_ucf101(args.out)
    test = sum(videos.is_test(i) for i in range(videos.num_videos))
    print(f"wrote {videos.num_videos} videos ({videos.num_videos - test} train, {test} test) "
          f"of {videos.frames} frames at {args.size}x{args.size} to {root} (UCF101 layout, split 1)")
    return 0


def _synth_untrimmed(args: argparse.Namespace) -> int:
    from vidssl.data.untrimmed import UntrimmedVideos

    try:
        videos = UntrimmedVideos(args.videos or 60, args.size, args.frames or 240, seed=args.seed)
    except ValueError as exc:
        raise VidsslError(str(exc)) from exc
    path = videos.write_activitynet(args.out)
    test = sum(videos.is_test(k) for k in range(videos.num_videos))
    print(f"wrote {videos.num_videos} untrimmed videos ({videos.num_videos - test} training, {test} validation) "
          f"of {videos.frames} frames at {args.size}x{args.size} and {path} (ActivityNet v1.3 layout)")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """Resize / re-encode (or extract frames of) every video of a dataset into a same-layout copy."""
    from vidssl.data.prepare import FAILURES, PrepareOptions, prepare_dataset

    try:
        opts = PrepareOptions(args.to, args.short_side, args.max_fps, args.gop, args.crf)
        result = prepare_dataset(args.src, args.dst, opts, args.jobs)
    except ValueError as exc:
        raise VidsslError(str(exc)) from exc
    failed = result["failed"]
    print(f"{result['prepared']} videos prepared, {result['skipped_done']} already done, {len(failed)} failed "
          f"(listed in {Path(args.dst) / FAILURES}) of {result['videos']} under {args.src}")
    if args.to == "frames":
        for line in _write_frame_lists(args, opts):
            print(line)
    return 0


def _write_frame_lists(args: argparse.Namespace, opts) -> list[str]:
    """``frames_<subset>.txt`` (``<dir> <num_frames> [label]``) for each subset the source layout has."""
    from vidssl.data.prepare import target_path
    from vidssl.data.sources import detect_layout, load_source

    layout = detect_layout(args.src) if args.layout == "auto" else args.layout
    subsets = ("train", "test") if layout in ("ucf101", "hmdb51", "ssv2", "activitynet") else ("train",)
    src, dst, written = Path(args.src).resolve(), Path(args.dst), []
    for subset in subsets:
        source = load_source(args.src, layout, args.split, subset)
        lines = []
        for r in source.records:
            folder = target_path(Path(r.path).resolve().relative_to(src), opts)
            count = len(list((dst / folder).glob("img_*.jpg"))) if (dst / folder).is_dir() else 0
            if count:
                lines.append(f"{folder.as_posix()} {count}" + (f" {r.label}" if r.label is not None else ""))
        name = dst / f"frames_{subset}.txt"
        name.write_text("".join(line + "\n" for line in lines))
        written.append(f"{name}: {len(lines)} frame folders ({subset}; read with --layout frame_list)")
    return written


def cmd_data_check(args: argparse.Namespace) -> int:
    from vidssl.data.check import CheckReport, check_source
    from vidssl.data.dataset import FileOpener
    from vidssl.data.index import VideoIndex, default_index_path

    sources = _load_sources(args)
    index = VideoIndex(default_index_path(sources[0].root), args.backend)
    report = CheckReport(0, 0)
    for source in sources:
        part = check_source(source, FileOpener(args.backend), args.min_frames, index)
        report.total += part.total
        report.ok += part.ok
        report.problems += part.problems
    try:
        index.save()
    except OSError as exc:
        print(f"note: could not save the metadata index ({exc})", file=sys.stderr)
    print(f"{sources[0].layout} dataset at {sources[0].root}")
    print(report.render())
    if report.total == 0:
        print(f"nothing to check: no videos found at {args.path}", file=sys.stderr)
    return 1 if report.problems or report.total == 0 else 0


def cmd_data_bench(args: argparse.Namespace) -> int:
    from vidssl.data.bench import bench_sampler, default_samplers, render_table
    from vidssl.data.dataset import FileOpener
    from vidssl.data.decoders import torchcodec_available

    source = _load_sources(args)[0]
    records = source.records[: args.videos]
    if not records:
        raise VidsslError(f"{args.path}: no videos to benchmark")
    backends = ["pyav", "torchcodec"] if args.backend == "auto" else [args.backend]
    if "torchcodec" in backends and not torchcodec_available():
        print("torchcodec (or the system FFmpeg it needs) not available: benchmarking pyav only", file=sys.stderr)
        backends = [b for b in backends if b != "torchcodec"]
    rows, full = [], {}
    for backend in backends:
        opener = FileOpener(backend)
        full[backend] = bench_sampler(records, opener, None, backend, "full_decode")
        for name, sampler in default_samplers().items():
            rows.append(bench_sampler(records, opener, sampler, backend, name))
    print(f"{len(records)} videos from {source.root}")
    print(render_table(rows, full))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """Dense per-snippet features of every video into ``--out`` (default: every subset the layout has;
    ``--subset all`` adds ActivityNet's unlabeled testing videos)."""
    from dataclasses import replace

    from vidssl.data.dataset import FileOpener
    from vidssl.engine.distributed import setup, teardown
    from vidssl.engine.threads import intra_op_threads
    from vidssl.eval.encoders import load_encoder
    from vidssl.eval.extract import SnippetProtocol, extract_dataset

    enc = load_encoder(args.encoder)
    clip_len = args.clip_len or (1 if enc.backbone.kind == "2d" else max(enc.clip_len, 8))
    try:
        p = SnippetProtocol(args.stride, clip_len, args.crop or enc.input_size, args.rescale, args.dtype, args.format)
    except ValueError as exc:
        raise VidsslError(str(exc)) from exc
    sources = _load_sources(args)
    seen, records = set(), []
    for src in sources:
        records += [r for r in src.records if not (r.path in seen or seen.add(r.path))]
    source = replace(sources[0], records=records)
    problems = sum(len(src.problems) for src in sources)
    ctx = setup(args.device)
    try:
        with intra_op_threads(args.threads, 0):
            manifest = extract_dataset(enc, source, FileOpener(args.backend), args.out, p, ctx)
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(f"{len(manifest['videos'])} videos' features in {args.out} ({p.format}, {p.dtype}, "
              f"{'rescaled to ' + str(p.rescale) if p.rescale else 'one row'} per video), "
              f"{len(manifest['skipped'])} unreadable, {problems} list problems (vidssl data check)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the built-in dataset: write and check a few synthetic videos, pretrain SeCo
    (laptop settings), evaluate it and a random-init encoder (linear SVM, retrieval, kNN, the temporal
    order probes), print one table and write the report."""
    import tempfile

    from vidssl.eval.results import comparison_table, load_results

    out = Path(args.out or tempfile.mkdtemp(prefix="vidssl-demo-"))
    run, evals = out / "runs" / "seco", out / "eval"
    ckpt = str(run / "checkpoint.pt")
    data = ["--labels", "appearance"]
    steps = [
        ["data", "synth", str(out / "videos"), "--videos", "40", "--clips-per-group", "2"],
        ["data", "check", str(out / "videos")],
        ["pretrain", "--method", "seco", "--out", str(run), f"train.epochs={args.epochs}"],
        ["eval", "linear", "--encoder", ckpt, "--encoder", "random:tiny2d", *data, "--out", str(evals)],
        ["eval", "retrieval", "--encoder", ckpt, "--encoder", "random:tiny2d", *data, "--out", str(evals)],
        ["eval", "knn", "--encoder", ckpt, "--encoder", "random:tiny2d", *data, "--out", str(evals)],
        ["eval", "order", "--encoder", ckpt, "--encoder", "random:tiny2d", *data, "--out", str(evals)],
        ["report", str(evals), str(run)],
        ["export", ckpt, str(out / "seco_tiny2d.safetensors")],
    ]
    for step in steps:
        print(f"\n$ vidssl {' '.join(step)}", flush=True)
        rc = main(step)
        if rc != 0:
            return rc
    print("\nSeCo (laptop settings) against random init on the built-in videos (%; appearance labels; "
          "order probes: chance 50):")
    print(comparison_table(load_results([evals])))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from vidssl.engine.config import asked_keys, laptop_config, load_config
    from vidssl.engine.train import CHECKPOINT, train

    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        overrides.insert(0, args.resume)  # `--resume key=value ...`: the flag took an override
        args.resume = "auto"
    if args.data:
        overrides += [f"data.source={args.data}", f"data.layout={args.layout}"]
    if args.out:
        overrides.append(f"train.out={args.out}")
    config = args.config
    if config is None and args.method:
        config = laptop_config(args.method)  # a method's laptop recipe (MLFO: Adam) is its default
    cfg = load_config(config, overrides, args.method)
    asked = asked_keys(args.config, overrides, args.method)
    if args.out is None and args.config is None and "train.out" not in " ".join(args.overrides):
        cfg.train.out = f"runs/{cfg.method}"
    resume = args.resume
    if resume and resume != "auto" and "train.out" not in asked:
        cfg.train.out = str(Path(resume).parent)  # a resumed run goes on writing where it was
    if resume == "auto":  # the run folder's checkpoint if there is one (SLURM requeues), else a fresh start
        resume = str(Path(cfg.train.out) / CHECKPOINT)
        if not Path(resume).is_file():
            print(f"no checkpoint at {resume} yet: starting from scratch", file=sys.stderr)
            resume = None
    train(cfg, resume, asked)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vidssl.engine.export import export_backbone

    weights, meta = export_backbone(args.checkpoint, args.out)
    print(f"wrote {weights} and {meta}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from vidssl.engine.export import write_export
    from vidssl.models.backbones import ARCHS, Backbone
    from vidssl.models.init import init_backbone

    if args.arch not in ARCHS:
        raise VidsslError(f"--arch: unknown backbone {args.arch!r}; choose one of {', '.join(ARCHS)}")
    backbone = Backbone(args.arch)
    report = init_backbone(backbone, args.src, args.format)
    print(report.describe())
    frames = args.frames or (16 if backbone.kind == "3d" else 1)
    weights, meta = write_export(backbone, args.out, mean=args.mean, std=args.std, input_size=args.size,
                                 frames=frames, stride=1, method=f"import:{report.format}",
                                 source_weights=str(Path(args.src).resolve()))
    print(f"wrote {weights} and {meta}")
    return 0


def cmd_bench_tables(args: argparse.Namespace) -> int:
    from vidssl.bench.tables import TABLES, Budget, run_tables

    budget = Budget(epochs=args.epochs, eval_clips=args.eval_clips, num_workers=args.workers,
                    extra=list(args.overrides))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None  # None: each row's own
    rendered = run_tables([t.strip() for t in args.tables.split(",") if t.strip()] or list(TABLES),
                          seeds, budget, args.out, args.docs or None, rows)
    for text in rendered.values():
        print("\n" + text)
    return 0


def cmd_bench_curves(args: argparse.Namespace) -> int:
    from vidssl.bench.curves import run_curves

    try:
        epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise VidsslError(f"--epochs/--seeds: comma-separated integers, got {args.epochs!r} / {args.seeds!r}") from exc
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    print("\n" + run_curves(epochs, seeds, args.out, args.docs or None, rows, args.workers, dynamics=args.dynamics))
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from vidssl.bench.speed import SpeedSettings, render_speed, run_speed, write_speed
    from vidssl.engine.config import COMPILE_MODES, check_choice

    if args.compile is not None:
        check_choice("--compile", args.compile, COMPILE_MODES)
    if not args.name or Path(args.name).name != args.name or args.name in (".", ".."):
        raise VidsslError(f"--name: {args.name!r} is not a file name (the report goes to --out/NAME.md)")
    s = SpeedSettings(args.steps, args.loader_batches, tuple(int(w) for w in args.workers.split(",")), args.device,
                      args.amp, args.channels_last, args.compile, list(args.overrides))
    rows = run_speed([m.strip() for m in args.methods.split(",") if m.strip()], s)
    print("\n" + render_speed(rows))
    print(f"wrote {write_speed(rows, args.out, args.name)}")
    failed = [r["method"] for r in rows if "error" in r]
    if failed:
        print(f"bench speed: failed: {', '.join(failed)} (the error is in the report)", file=sys.stderr)
    return 1 if failed else 0


def cmd_bench_loader(args: argparse.Namespace) -> int:
    import tempfile

    from vidssl.bench.loader import PAPER_CONFIGS, render_loader, run_loader_bench
    from vidssl.engine.threads import intra_op_threads

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in PAPER_CONFIGS]
    if unknown or args.videos < 1 or args.samples < 1:
        raise VidsslError(f"--methods from {', '.join(PAPER_CONFIGS)} (got {unknown}); --videos, --samples >= 1")
    work = Path(args.work or tempfile.mkdtemp(prefix="vidssl-loader-"))
    with intra_op_threads(1, 0):  # one worker's view: a single thread
        rows, megabytes = run_loader_bench(work, args.videos, args.samples, methods, args.seconds)
    text = render_loader(rows, megabytes, args.videos, args.seconds)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = " ".join(["vidssl bench loader", f"--videos {args.videos}", f"--samples {args.samples}",
                            f"--seconds {args.seconds:g}", f"--methods {','.join(methods)}"])
        (out / "loader.md").write_text(f"# Loader: one worker per method and data format\n\n`{command}`\n\n"
                                       f"{text}\n")
        print(f"wrote {out / 'loader.md'}")
    return 0


def cmd_bench_all(args: argparse.Namespace) -> int:
    """Everything docs/results holds from the laptop: the CPU speed report (``speed_laptop.md``, at
    the settings the docs give) and every table, as ``bench speed`` and ``bench tables`` make them."""
    parser = build_parser()
    speed = parser.parse_args(["bench", "speed", "--device", "cpu", "--steps", "40", "--loader-batches", "20",
                               "--out", args.docs, "--name", "speed_laptop"])
    given = (("seeds", args.seeds), ("epochs", args.epochs))  # unset: bench tables' defaults
    budget = [f"--{key}={value}" for key, value in given if value is not None]
    tables = parser.parse_args(["bench", "tables", *budget, "--out", args.out, "--docs", args.docs])
    speed_status = 0 if args.skip_speed else cmd_bench_speed(speed)
    return max(speed_status, cmd_bench_tables(tables))


def cmd_report(args: argparse.Namespace) -> int:
    from vidssl.eval.report import make_report

    out = args.out or str(Path(args.dirs[0]) / "report")
    table, written = make_report(args.dirs, out)
    print(table)
    print(f"\nwrote {out}/report.md and {len(written)} plot(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidssl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_parsers(sub)
    _add_training_parsers(sub)
    from vidssl.eval.cli import add_eval_parsers

    add_eval_parsers(sub)
    p = sub.add_parser("report", help="comparison table and plots from evaluation / pretraining folders")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", default=None, help="default: <first dir>/report")
    p.set_defaults(func=cmd_report)
    _add_bench_parsers(sub)
    p = sub.add_parser("demo", help="the main job on the built-in synthetic dataset")
    p.add_argument("--out", default=None, help="folder for the generated videos (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=30, help="pretraining epochs (laptop settings)")
    p.set_defaults(func=cmd_demo)
    return parser


def _add_data_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="dense per-snippet features of every video, one file each (for BMN)")
    _add_source_args(p)
    p.add_argument("--encoder", required=True, help="checkpoint.pt, an export or random:ARCH")
    p.add_argument("--out", required=True, help="features folder (resumable)")
    p.add_argument("--stride", type=int, default=16, help="frames between snippets (BMN: 16)")
    p.add_argument("--clip-len", type=int, default=0, help="frames per snippet for 3D encoders")
    p.add_argument("--crop", type=int, default=0, help="default: the encoder's input size")
    p.add_argument("--rescale", type=int, default=0, help="rows per video by linear interpolation (BMN: 100)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--format", default="npy", choices=("npy", "safetensors"))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_extract)
    data = sub.add_parser("data", help="datasets: synthesise, check, benchmark decoding")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("synth", help="write the built-in synthetic videos as mp4 in the UCF101 layout "
                                      "(--untrimmed: long videos with action instances, ActivityNet layout)")
    p.add_argument("out")
    p.add_argument("--videos", type=int, default=None, help="default 400 (untrimmed: 60)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=None, help="default 64 (untrimmed: 240)")
    p.add_argument("--untrimmed", action="store_true",
                   help="untrimmed videos: background stretches and 1-3 instances of one action each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-per-group", type=int, default=2)
    p.add_argument("--dynamics", default="arrow", choices=DYNAMICS,
                   help="arrow: irreversible, as real video (default); friction: the same motion without ink; "
                        "reversible: the control (docs/data.md)")
    p.set_defaults(func=cmd_data_synth)
    p = dsub.add_parser("prepare", help="a same-layout copy that decodes fast: short side resized, H.264 with "
                                        "short GOPs (or JPEG frames), other files copied")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", default="video", choices=("video", "frames"))
    p.add_argument("--short-side", type=int, default=320)
    p.add_argument("--max-fps", type=float, default=0.0, help="cap the frame rate (0: keep)")
    p.add_argument("--gop", type=int, default=12, help="a key frame every N frames")
    p.add_argument("--crf", type=int, default=23, help="H.264 quality (lower: better, larger)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--layout", default="auto", help="the source's layout (for --to frames' lists)")
    p.add_argument("--split", type=int, default=1)
    p.set_defaults(func=cmd_data_prepare)
    p = dsub.add_parser("check", help="list every unreadable, empty, too short or mislabeled entry")
    _add_source_args(p)
    p.add_argument("--min-frames", type=int, default=2, help="shorter videos are reported (default 2)")
    p.set_defaults(func=cmd_data_check)
    p = dsub.add_parser("bench", help="decode throughput per sampler and backend")
    _add_source_args(p)
    p.add_argument("--videos", type=int, default=20, help="number of videos to time")
    p.set_defaults(func=cmd_data_bench)


def _add_training_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining (torchrun for several processes)")
    p.add_argument("--method", default=None, help="seco, moco, vclr, corp_f, corp_m, simclr, mlfo (default: the "
                   "config's, else seco); without --config, the method's laptop config")
    p.add_argument("--config", default=None, help="YAML file or built-in config name (e.g. seco_laptop)")
    p.add_argument("--data", default=None, help="dataset path (default: the built-in synthetic videos)")
    p.add_argument("--layout", default="auto")
    p.add_argument("--out", default=None, help="run folder (default: runs/<method>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint (no value: <run folder>/checkpoint.pt if it exists)")
    p.add_argument("overrides", nargs="*", help="config overrides: key=value (e.g. optim.lr=0.1)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("export", help="write the backbone as torchvision-compatible weights + JSON")
    p.add_argument("checkpoint")
    p.add_argument("out", help="OUT.safetensors or OUT.pt")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="convert weights trained elsewhere (torchvision, MoCo, SeCo, VCLR, "
                                        "CoCLR, MLFO) to an export")
    p.add_argument("format", choices=FORMATS)
    p.add_argument("src", help="the weights file (.pth, .pth.tar, .pt or .safetensors)")
    p.add_argument("out", help="OUT.safetensors or OUT.pt (with OUT.json)")
    p.add_argument("--arch", required=True, help="the backbone the weights belong to (resnet50, r3d_18, ...)")
    p.add_argument("--size", type=int, default=224, help="the input size it was trained at (default 224)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: 1 for 2D, 16 for 3D)")
    p.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406])
    p.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225])
    p.set_defaults(func=cmd_import)


def _add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="the papers' tables at laptop scale; throughput")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    p = bsub.add_parser("tables", help="ablation tables on the built-in data (pretrain + evaluate, resumable)")
    p.add_argument("--tables", default="", help="comma-separated: seco, vclr, corp, corp_f, mlfo, baselines "
                   "(default: all)")
    p.add_argument("--seeds", default=None, help="comma-separated pretraining seeds for every row (default: each "
                   "row's own: 0-9 for the frame methods' rows, under a minute a run, 0-2 for the others)")
    p.add_argument("--epochs", type=int, default=10, help="pretraining epochs per run (the budget)")
    p.add_argument("--rows", default="", help="comma-separated row labels or slugs (default: all)")
    p.add_argument("--eval-clips", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/bench", help="runs and results (one JSON per run)")
    p.add_argument("--docs", default="docs/results", help="where the markdown tables and plots go ('' for none)")
    p.add_argument("overrides", nargs="*", help="key=value applied to every row (e.g. train.batch_size=32)")
    p.set_defaults(func=cmd_bench_tables)

    p = bsub.add_parser("curves", help="accuracy against pretraining budget: every method, random init, supervised")
    p.add_argument("--epochs", default="10,50,150",
                   help="comma-separated budgets in epochs (18 steps each on the built-in videos)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--rows", default="", help="comma-separated row labels or slugs (default: all)")
    p.add_argument("--dynamics", default="arrow", choices=DYNAMICS,
                   help="the built-in videos' dynamics for pretraining and evaluation (friction: no ink, so "
                        "single frames do not tell the time and random features stay at chance on the order probes)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/curves", help="runs and results (one JSON per run)")
    p.add_argument("--docs", default="docs/results", help="where curves.md and curves.png go ('' for none)")
    p.set_defaults(func=cmd_bench_curves)

    p = bsub.add_parser("speed", help="step time against the bare-backbone bound, loader rates, peak memory")
    p.add_argument("--methods", default="seco,moco,vclr,corp_f,corp_m,simclr,mlfo")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method (medians)")
    p.add_argument("--loader-batches", type=int, default=10)
    p.add_argument("--workers", default="0,1,2", help="loader worker counts to time")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   help="torch.compile the method and its bound, in this mode (default: default): default, "
                   "reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs")
    p.add_argument("--out", default="docs/results", help="writes NAME.md and NAME.json here")
    p.add_argument("--name", default="speed", help="the report's file name, without extension (default speed)")
    p.add_argument("overrides", nargs="*", help="key=value applied to every method's laptop config")
    p.set_defaults(func=cmd_bench_speed)

    p = bsub.add_parser("loader", help="one loader worker's samples/s per method on raw, prepared and frame-folder "
                                       "Kinetics-like videos, and the workers an H100 needs")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=6, help="timed samples per method, size and format")
    p.add_argument("--methods", default="seco,moco,vclr,corp_f,corp_m,simclr,mlfo")
    p.add_argument("--work", default="", help="folder for the generated videos (default: a temporary one)")
    p.add_argument("--out", default="docs/results", help="writes loader.md here ('' to only print)")
    p.set_defaults(func=cmd_bench_loader)

    p = bsub.add_parser("all", help="regenerate docs/results: the laptop speed report and every table (~3.5 h on 2 "
                        "cores; finished table runs are reused)")
    p.add_argument("--docs", default="docs/results", help="where the reports, tables and plots go")
    p.add_argument("--out", default="runs/bench", help="the tables' runs (one JSON per run)")
    p.add_argument("--seeds", default=None, help="as bench tables (default: each row's own)")
    p.add_argument("--epochs", type=int, default=None, help="as bench tables (default 10)")
    p.add_argument("--skip-speed", action="store_true", help="the tables only")
    p.set_defaults(func=cmd_bench_all)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except VidsslError as exc:
        print(f"vidssl: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment's answer (disk full, permission denied), not a bug
        logging.getLogger("vidssl").debug("OSError", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vidssl: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidssl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
