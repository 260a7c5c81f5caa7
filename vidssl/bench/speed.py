"""``vidssl bench speed``: what a method costs beyond its backbone, and whether the loader keeps up.

- **Method overhead.** One training step of the method (forward, backward, optimizer step) against
  its *bare-backbone bound*: the very backbone passes the method made in that step (recorded by
  wrapping every backbone's ``forward_levels``: the same inputs, with gradient where the method had
  it), reduced by a mean instead of heads, queues and losses, then backward and the same optimizer
  step on the backbone. Both are timed alternately in one process on the same batch; the overhead
  is the median over the timed steps of each step's ratio to the bound timed right after it (the
  pairs share the machine's state, which on a shared VM drifts within seconds), reported with the
  quartiles of those ratios (goal: <= 1.15; above it, the report prints the ratio in bold). It is
  measured with PyTorch's intra-op threads (the model alone on every core), and again with the
  threads a run uses beside its default loader workers (``vidssl.engine.threads``) where these
  differ: one on 2 cores for the frame methods, whose small non-backbone operations cost more
  with two threads to coordinate.
- **Extras alone.** The same step with every backbone call answered by the output recorded for it
  (leaves, with gradient where the method had it): the heads, queues, losses, EMA and shuffles
  with their backward and optimizer work, and nothing of the backbone. Bare bound plus extras
  against the step shows whether the overhead is the extras' own cost or their interference with
  the backbone's (caches, threads). Eager only (not with ``--compile``).
- **Loader.** Batches per second of the method's DataLoader with 0, 1 and 2 workers against the
  model's steps per second (goal: the loader is never the bottleneck at the default setting),
  with the built-in set's frames cached (as from the second epoch of a run: its workers persist);
  and the first pass without workers, where every frame is rendered (decoded, for files). Each
  rate is the loader's steady state: timed from the end of its workers' first round of batches,
  over whole rounds (:func:`steady_batches_per_s`).
- **Training with its loader.** Steps per second of loading and training together at the default
  workers, which share the machine with the model as in a run (and with a run's intra-op threads,
  ``vidssl.engine.threads``), as a fraction of the model alone: in the first epoch (frames
  rendered) and in later ones (frames cached).
- **Arithmetic.** The matrix products' and convolutions' floating-point operations of the step
  against its bound's (``torch.utils.flop_counter``; elementwise work not counted): the part of the
  overhead that the method's own layers (heads, relation MLPs) cost by arithmetic alone, which no
  implementation removes; it does not depend on the machine's noise.
- **Peak memory.** CUDA: ``max_memory_allocated`` of the step. CPU: the process's peak RSS, each
  method measured in a fresh process.

GPU variants (bf16 autocast, channels-last, ``torch.compile`` in any of its modes, of which
``reduce-overhead`` replays CUDA graphs) are options; every row records the device name. With
``torch.compile`` the bound's backbone passes are compiled as well, in the same mode and as one
function (one graph, as the method's step is).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from vidssl.data import synthetic
from vidssl.data.dataset import collate_samples, seed_worker
from vidssl.engine.compile import begin_step, compile_step
from vidssl.engine.config import laptop_config, load_config
from vidssl.engine.optim import build_optimizer
from vidssl.engine.threads import intra_op_threads
from vidssl.models.backbones import Backbone


@dataclass
class SpeedSettings:
    steps: int = 10  # timed steps (after 3 warm-up steps)
    loader_batches: int = 10
    workers: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    amp: bool = False  # bf16 autocast (CUDA)
    channels_last: bool = False
    compile: str | None = None  # torch.compile's mode (reduce-overhead: CUDA graphs); None: eager
    overrides: list[str] = field(default_factory=list)


OVERHEAD_GOAL = 1.15  # a method's step against its bare-backbone bound (issue 8's goal)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class BackboneRecorder:
    """Records every backbone call of a step: (backbone, input, grad enabled) and its output; and
    replays the outputs in place of the calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.backbones = [m for m in model.modules() if isinstance(m, Backbone)]
        self.calls: list[tuple[Backbone, torch.Tensor, bool]] = []
        self.outputs: list[dict[str, torch.Tensor]] = []

    @contextlib.contextmanager
    def _forwards(self, make: Callable[[Backbone], Callable]) -> Iterator[None]:
        for bb in self.backbones:
            bb.forward_levels = make(bb)
        try:
            yield
        finally:
            for bb in self.backbones:
                del bb.forward_levels  # back to the class method

    @contextlib.contextmanager
    def recording(self) -> Iterator[BackboneRecorder]:
        def wrap(bb: Backbone) -> Callable:
            inner = bb.forward_levels

            def recorded(x: torch.Tensor) -> dict[str, torch.Tensor]:
                grad = torch.is_grad_enabled()
                self.calls.append((bb, x.detach(), grad))
                out = inner(x)
                self.outputs.append({k: v.detach().clone().requires_grad_(grad) for k, v in out.items()})
                return out

            return recorded

        with self._forwards(wrap):
            yield self

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Every backbone call returns the output recorded for it (leaves, with gradient where the
        method had it) instead of running: the step without its backbone passes."""
        outputs = iter(self.outputs)
        with self._forwards(lambda bb: lambda x: next(outputs)):
            yield
        for out in self.outputs:
            for v in out.values():
                v.grad = None


def bare_loss(calls: list[tuple[Backbone, torch.Tensor, bool]]) -> torch.Tensor | None:
    """The bare-backbone bound's forward pass: the backbone passes a step made (same inputs, with
    gradient where the method had it), each reduced by a mean instead of heads, queues and losses;
    their sum (``None`` if no pass had gradient)."""
    loss = None
    for bb, x, grad in calls:
        with torch.set_grad_enabled(grad):
            out = bb.forward_levels(x)["high"].float().mean()
        if grad:
            loss = out if loss is None else loss + out
    return loss


def bare_step(loss_fn: Callable[[], torch.Tensor | None], optimizer: torch.optim.Optimizer,
              autocast: contextlib.AbstractContextManager) -> None:
    """One step of the bound: ``loss_fn`` (:func:`bare_loss` of a step's calls, or its compiled
    version: all passes in one graph, like the method's step), backward, the optimizer step."""
    with autocast:
        loss = loss_fn()
    if loss is not None:
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_channels_last(model: torch.nn.Module) -> None:
    """Channels-last for every 4-D (2D convolution) and 5-D (3D convolution) weight or buffer, each
    in its own layout: ``nn.Module.to(memory_format=...)`` applies one layout to both, which fails on
    a 3D network with a 2D convolution (MLFO's motion excitation)."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.dim() in (4, 5):
            t.data = t.data.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)


class StepTimer:
    """One method's training step and its bare-backbone bound on one fixed batch (laptop config),
    built once; each call of :meth:`method_step` / :meth:`bare_step` runs one optimisation step."""

    def __init__(self, method_name: str, s: SpeedSettings) -> None:
        from vidssl.engine.train import build_dataset, build_method

        self.s = s
        self.cfg = cfg = load_config(laptop_config(method_name), list(s.overrides), method_name)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto"
                                   else s.device)
        torch.manual_seed(0)
        self.dataset = build_dataset(cfg)
        batch = next(iter(DataLoader(self.dataset, batch_size=cfg.train.batch_size,
                                     sampler=list(range(cfg.train.batch_size)), collate_fn=collate_samples)))
        self.memory_format = None
        if s.channels_last:
            self.memory_format = torch.channels_last_3d if batch["views"][0].ndim == 5 else torch.channels_last
        self.views, self.info = self.to_device(batch)
        self.model = build_method(cfg, False)[0].to(self.device)
        if self.memory_format:
            to_channels_last(self.model)
        self.model.set_epoch(cfg.train.epochs - 1, cfg.train.epochs)  # the full loss (MLFO's second stage)
        self.model.train()
        o = cfg.optim
        self.optimizer = build_optimizer(o.name, self.model, o.lr, o.momentum, o.weight_decay)
        compiled = s.compile is not None
        self.step_fn = compile_step(self.model, s.compile) if compiled else self.model  # the batch shape is fixed
        self.recorder = BackboneRecorder(self.model)
        params = [p for bb in self.recorder.backbones for p in bb.parameters() if p.requires_grad]
        self.bare_optimizer = build_optimizer(o.name, torch.nn.ParameterList(params), o.lr, o.momentum,
                                              o.weight_decay)
        # with --compile the bound's passes are compiled too, as one function like the method's step
        # (otherwise the ratio would compare compiled against eager code, or one graph against several)
        self.eager_bare_loss = functools.partial(bare_loss, self.recorder.calls)
        self.bare_loss = compile_step(self.eager_bare_loss, s.compile) if compiled else self.eager_bare_loss
        with self.recorder.recording():
            self.method_step(0, self.model)  # uncompiled: the recording wrappers must run eagerly

    def to_device(self, b: dict) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        vs = [v.to(self.device, non_blocking=True) for v in b["views"]]
        if self.memory_format:
            vs = [v.contiguous(memory_format=self.memory_format) for v in vs]
        return vs, {k: v.to(self.device, non_blocking=True) for k, v in b["info"].items()}

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.s.amp and self.device.type == "cuda")

    def method_step(self, seed: int, fn: Callable | None = None, batch: dict | None = None) -> None:
        """One step of the method (``fn``: the configured step unless given) on the fixed batch or ``batch``."""
        fn = fn or self.step_fn
        views, info = (self.views, self.info) if batch is None else self.to_device(batch)
        if fn is self.step_fn:
            begin_step(self.s.compile)
        with self.autocast():
            loss, _ = fn(views, info, torch.Generator().manual_seed(seed))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def bare_step(self, seed: int = 0) -> None:
        begin_step(self.s.compile)
        bare_step(self.bare_loss, self.bare_optimizer, self.autocast())

    def extras_step(self, seed: int) -> None:
        """The method's step with every backbone call answered by its recorded output (eager)."""
        with self.recorder.replaying():
            self.method_step(seed, self.model)

    def flops(self) -> dict[str, int]:
        return {"method": count_flops(lambda: self.method_step(1, self.model)),  # eager, like the recording
                "bare": count_flops(lambda: bare_step(self.eager_bare_loss, self.bare_optimizer, self.autocast()))}

    def alternately(self, fns: list[Callable[[int], None]]) -> list[list[float]]:
        """Seconds of each of ``fns`` in ``steps`` rounds, one after another (machine noise hits all alike)."""
        times: list[list[float]] = [[] for _ in fns]
        for i in range(self.s.steps):
            for fn, fn_times in zip(fns, times, strict=True):
                _sync(self.device)
                t0 = time.perf_counter()
                fn(100 + i)
                _sync(self.device)
                fn_times.append(time.perf_counter() - t0)
        return times


def measure_method(method_name: str, s: SpeedSettings) -> dict:
    """Step time, bare bound, loader rates and peak memory of one method (laptop config)."""
    t = StepTimer(method_name, s)
    flops = t.flops()
    if t.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(t.device)
    for i in range(3):  # warm-up (and compilation)
        t.method_step(i)
        t.bare_step(i)
    eager = s.compile is None  # a compiled graph would have traced the real backbone calls
    if eager:
        t.extras_step(0)
    method_times, bare_times, *extras_times = t.alternately([t.method_step, t.bare_step]
                                                            + ([t.extras_step] if eager else []))
    overhead, quartiles = ratio_quartiles(method_times, bare_times)
    at_run_threads = overhead_at_run_threads(t)
    peak = (torch.cuda.max_memory_allocated(t.device) if t.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    step_s = statistics.median(method_times)
    return {"method": method_name, "arch": t.cfg.arch(), "batch": t.cfg.train.batch_size,
            "device": device_name(t.device), "backbone_calls": [[list(x.shape), g] for _, x, g in t.recorder.calls],
            "step_s": step_s, "bare_s": statistics.median(bare_times),
            "extras_s": statistics.median(extras_times[0]) if extras_times else None,
            "overhead": overhead, "overhead_quartiles": quartiles, "overhead_at_run_threads": at_run_threads,
            "steps_per_s": 1.0 / step_s, "flops": flops["method"], "bare_flops": flops["bare"],
            **loader_rates(t), "default_workers": t.cfg.data.num_workers, "peak_bytes": peak, "settings": asdict(s)}


def overhead_at_run_threads(t: StepTimer) -> dict | None:
    """The overhead at the intra-op threads a run uses beside its default workers (one on 2 cores
    for the frame methods), where these differ from PyTorch's (the model alone on every core)."""
    threads_now = torch.get_num_threads()
    with intra_op_threads(t.cfg.train.threads, t.cfg.data.num_workers) as run_threads:
        if run_threads == threads_now:
            return None
        t.method_step(0)
        t.bare_step(0)
        overhead, quartiles = ratio_quartiles(*t.alternately([t.method_step, t.bare_step]))
        return {"threads": run_threads, "overhead": overhead, "quartiles": quartiles}


def loader_rates(t: StepTimer) -> dict:
    """The method's DataLoader alone (first pass without workers, then cached at each worker count)
    and training with it at the default workers and a run's threads (cached, then first epoch)."""
    s, default = t.s, t.cfg.data.num_workers
    # every loader forks its workers as a training run does: this process was spawned, which makes
    # spawn its default, but a run's workers are forked (Linux) and inherit the rendered frames
    fork = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None

    def batches_read(workers: int) -> int:  # a round untimed, then whole rounds
        return sum(loader_rounds(workers, s.loader_batches))

    def loader(workers: int, batches: int) -> DataLoader:
        size = t.cfg.train.batch_size
        indices = [i % len(t.dataset) for i in range(size * batches)]  # wraps past the dataset's end
        return DataLoader(t.dataset, batch_size=size, sampler=indices, num_workers=workers,
                          worker_init_fn=seed_worker, collate_fn=collate_samples,
                          multiprocessing_context=fork if workers else None, pin_memory=t.device.type == "cuda")

    def batches_per_s(workers: int, train: bool) -> float:
        """A fresh loader's steady rate; with ``train`` each batch is also trained on."""
        def consume(i: int, b: dict) -> None:
            if train:
                t.method_step(1000 + i, batch=b)

        def clock() -> float:
            _sync(t.device)
            return time.perf_counter()

        return steady_batches_per_s(iter(loader(workers, batches_read(workers))), workers, s.loader_batches,
                                    consume, clock)

    synthetic.FRAME_CACHE.clear()  # a first epoch: every frame rendered (decoded, for files)
    first_pass = batches_per_s(0, train=False)
    for _ in loader(0, max(batches_read(w) for w in (*s.workers, default))):  # render the rest untimed
        pass
    rates = {str(w): batches_per_s(w, train=False) for w in s.workers}  # frames now cached
    with intra_op_threads(t.cfg.train.threads, default) as train_threads:
        train_rates = {"cached": batches_per_s(default, train=True)}
        synthetic.FRAME_CACHE.clear()
        train_rates["first_pass"] = batches_per_s(default, train=True)
    return {"loader_batches_per_s": rates, "loader_first_pass_batches_per_s": first_pass,
            "train_with_loader_steps_per_s": train_rates, "train_threads": train_threads}


def milliseconds(seconds: float) -> str:
    """A step time for the report: whole milliseconds, with a decimal below 10 ms (GPU steps)."""
    ms = 1000 * seconds
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def loader_rounds(workers: int, at_least: int) -> tuple[int, int]:
    """A loader's batches per round of its workers (one each; one without workers) and the batches
    :func:`steady_batches_per_s` times: ``at_least`` rounded up to whole rounds."""
    per_round = max(1, workers)
    return per_round, per_round * math.ceil(at_least / per_round)


def steady_batches_per_s(batches: Iterator, workers: int, at_least: int, consume: Callable[[int, object], None],
                         clock: Callable[[], float] = time.perf_counter) -> float:
    """Batches per second of a loader with ``workers`` workers in its steady state, each batch
    passed to ``consume``: the loader's workers start together and each delivers a round of one
    batch per worker in about the same time, so the clock starts after the first round and runs for
    whole rounds, ``at_least`` batches rounded up to a multiple of the workers. Timed from the first
    batch, the other workers' first batches would arrive at once (with few timed batches and many
    workers, the rate of the start-up); a part round would miss batches still in the making."""
    per_round, timed = loader_rounds(workers, at_least)
    for i in range(per_round):
        consume(i, next(batches))
    t0 = clock()
    for i in range(per_round, per_round + timed):
        consume(i, next(batches))
    return timed / (clock() - t0)


def ratio_quartiles(times: list[float], bound_times: list[float]) -> tuple[float, list[float]]:
    """The median of the per-step ratios ``times[i] / bound_times[i]`` and their first and third
    quartiles."""
    ratios = [t / b for t, b in zip(times, bound_times, strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return median, [q1, q3]


def count_flops(fn: Callable[[], None]) -> int:
    """Matrix-product and convolution FLOPs of one call of ``fn`` (forward and backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def _measure_or_error(method_name: str, s: SpeedSettings) -> dict:
    try:
        return measure_method(method_name, s)
    except Exception as exc:  # reported with the method named; the other methods still run
        return {"method": method_name, "error": f"{type(exc).__name__}: {exc}"}


def _child(method_name: str, s: SpeedSettings, queue) -> None:
    queue.put(_measure_or_error(method_name, s))


def run_speed(methods: list[str], s: SpeedSettings, isolate: bool = True) -> list[dict]:
    """Each method in a fresh process (so peak RSS is its own) unless ``isolate`` is False. A method
    that fails is reported (a row ``{"method", "error"}``) and the others still run."""
    rows = []
    for name in methods:
        if isolate:
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(name, s, queue))
            proc.start()
            row = queue.get()
            proc.join()
        else:
            row = _measure_or_error(name, s)
        rows.append(row)
        if "error" in row:
            print(f"[speed] {name}: FAILED: {row['error']}", flush=True)
            continue
        print(f"[speed] {name}: {milliseconds(row['step_s'])} ms/step, bare {milliseconds(row['bare_s'])} ms, "
              f"overhead {row['overhead']:.2f}x", flush=True)
    return rows


def _overhead_text(overhead: float, quartiles: tuple[float, float] | list[float]) -> str:
    """``1.12x (1.05-1.20)``, the ratio in bold when above the goal as printed."""
    text = f"{overhead:.2f}x"
    if round(overhead, 2) > OVERHEAD_GOAL:
        text = f"**{text}**"
    return f"{text} ({quartiles[0]:.2f}-{quartiles[1]:.2f})"


def render_speed(rows: list[dict]) -> str:
    failed = [f"- {r['method']}: failed: {r['error']}" for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    if not rows:
        return "\n".join(failed) + "\n"
    workers = sorted({w for r in rows for w in r["loader_batches_per_s"]}, key=int)
    settings = rows[0]["settings"]
    overrides = " ".join(settings["overrides"])
    configs = f"laptop configs with `{overrides}`" if overrides else "laptop configs"
    lines = [f"Device: {rows[0]['device']}; {configs}; {settings['steps']} timed steps, medians; "
             f"settings: amp={settings['amp']}, channels_last={settings['channels_last']}, "
             f"compile={settings['compile'] or 'off'}.", "",
             "| method | backbone | batch | step (ms) | bare backbone (ms) | extras alone (ms) | overhead (quartiles) "
             "| overhead at the run's threads | FLOPs against the bound | model steps/s | "
             "loader first pass 0w batches/s | "
             + " | ".join(f"loader {w}w batches/s (cached)" for w in workers) + " | loader keeps up (default workers) "
             "| training with loader (threads), of model alone: first epoch / later | peak memory (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(workers) + "---|---:|---:|"]
    for r in rows:
        rates, train = r["loader_batches_per_s"], r["train_with_loader_steps_per_s"]
        default = rates.get(str(r["default_workers"]))
        keeps_up = "—" if default is None else ("yes" if default >= r["steps_per_s"] else "**no**")
        extras = "—" if r.get("extras_s") is None else milliseconds(r["extras_s"])
        overhead = _overhead_text(r["overhead"], r["overhead_quartiles"])
        at_run = "same"
        if run := r.get("overhead_at_run_threads"):
            at_run = f"{_overhead_text(run['overhead'], run['quartiles'])}, {run['threads']} thr."
        lines.append(f"| {r['method']} | {r['arch']} | {r['batch']} | {milliseconds(r['step_s'])} | "
                     f"{milliseconds(r['bare_s'])} | {extras} | {overhead} | {at_run} | "
                     f"{r['flops'] / r['bare_flops']:.3f}x | {r['steps_per_s']:.2f} | "
                     f"{r['loader_first_pass_batches_per_s']:.2f} | "
                     + " | ".join(f"{rates[w]:.2f}" for w in workers)
                     + f" | {keeps_up} ({r['default_workers']}w) | {train['first_pass'] / r['steps_per_s']:.0%} / "
                     f"{train['cached'] / r['steps_per_s']:.0%} ({r['train_threads']})"
                     f" | {r['peak_bytes'] / 2**20:.0f} |")
    return "\n".join(lines + ([""] + failed if failed else [])) + "\n"


def write_speed(rows: list[dict], out: str | Path, name: str = "speed") -> Path:
    """``<out>/<name>.json`` (the measurements) and ``<out>/<name>.md`` (:func:`render_speed`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / f"{name}.md").write_text(render_speed(rows))
    return out / f"{name}.md"
