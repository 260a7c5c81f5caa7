"""The training loop: plain PyTorch, DDP under ``torchrun``, exact resume.

Determinism: data randomness is a function of ``(seed, epoch, index)``, the per-epoch shuffle a
function of ``(seed, epoch)``, shuffle-BN's permutation a function of ``(seed, step)``; the
checkpoint holds the model (with momentum encoders and queues), optimizer, step and RNG state, so
a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vidssl.data.dataset import FileOpener, VideoDataset, collate_samples, seed_worker
from vidssl.data.records import VideoSource
from vidssl.data.sources import load_source
from vidssl.data.transforms import ClipAugment, flip_default
from vidssl.engine.checkpoint import (
    all_finite,
    check_resumable,
    load_checkpoint,
    load_weights,
    remove_stale_temporaries,
    save_atomic,
)
from vidssl.engine.compile import begin_step, compile_mode, compile_step
from vidssl.engine.config import Config, config_from_yaml_text, validate, value_at
from vidssl.engine.distributed import DistContext, setup, teardown
from vidssl.engine.logger import RunLogger, open_backends
from vidssl.engine.monitor import KNNMonitor, build_monitor
from vidssl.engine.optim import build_optimizer, lr_at
from vidssl.engine.threads import intra_op_threads
from vidssl.errors import ConfigError, VidsslError
from vidssl.methods import METHODS, Method
from vidssl.models.backbones import Backbone
from vidssl.models.init import InitReport, init_backbone

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


class TrainingError(VidsslError):
    """The run cannot go on (non-finite loss, ...); the last good checkpoint is intact."""


def build_source(cfg: Config) -> tuple[VideoSource, Any]:
    """The dataset's records and its reader factory (the built-in synthetic set by default)."""
    d = cfg.data
    if d.source == "synthetic":
        videos = d.synthetic()
        return videos.source(d.subset if d.subset in ("train", "test") else "all"), videos.open
    source = load_source(d.source, d.layout, d.split, d.subset, d.root or None)
    return source, FileOpener(d.backend)


def build_method(cfg: Config, distributed: bool, init: bool = False) -> tuple[Method, InitReport | None]:
    """The method of ``cfg``; with ``init``, its backbone first takes the weights of
    ``model.init`` (before the method copies it into a momentum encoder), reported."""
    backbone = Backbone(cfg.arch())
    report = None
    if init and cfg.model.init not in ("", "none"):
        report = init_backbone(backbone, cfg.model.init, cfg.model.init_format)
    return METHODS[cfg.method](cfg.method_config(), backbone, distributed), report


def check_init(cfg: Config) -> None:
    """A paper config that names what the paper starts from (``model.init_from``) needs
    ``model.init``: the file, or ``none`` to train from scratch, which is logged as a deviation."""
    if not cfg.model.init_from:
        return
    if not cfg.model.init:
        raise ConfigError(f"model.init: this setting starts from {cfg.model.init_from}; fetch it and give "
                          "model.init=PATH, or model.init=none to train from scratch (a deviation from the paper)")
    if cfg.model.init == "none":
        log.warning("model.init=none: training from scratch, where the paper starts from %s", cfg.model.init_from)


def sync_batch_norm(method: Method, ctx: DistContext) -> Method:
    """``model.sync_bn``: every BatchNorm of the method (backbone and heads) becomes a SyncBatchNorm,
    whose statistics are the global batch's, under DDP on CUDA. PyTorch's SyncBatchNorm runs only on
    GPUs: CPU ranks keep per-rank BatchNorm, with a warning. The state-dict keys do not change, so
    checkpoints load either way."""
    if not ctx.distributed:
        return method
    if ctx.device.type != "cuda":
        if ctx.is_main:
            log.warning("model.sync_bn: SyncBatchNorm runs only on CUDA devices; these CPU ranks keep "
                        "per-rank BatchNorm statistics")
        return method
    return nn.SyncBatchNorm.convert_sync_batchnorm(method)


def build_dataset(cfg: Config) -> VideoDataset:
    source, opener = build_source(cfg)
    spec = METHODS[cfg.method].data_spec(cfg.method_config())
    a = cfg.augment
    p_flip = flip_default(source.layout) if a.p_flip is None else a.p_flip
    transform = ClipAugment(size=a.size, scale=tuple(a.scale), jitter=tuple(a.jitter), p_jitter=a.p_jitter,
                            p_gray=a.p_gray, p_blur=a.p_blur, p_flip=p_flip, shared_crop=a.shared_crop,
                            per_frame_jitter=a.per_frame_jitter, per_frame_gray=a.per_frame_gray,
                            mean=tuple(a.mean), std=tuple(a.std))
    return VideoDataset(source, spec.sampler, transform, opener, repeat=spec.repeat, layout=spec.layout,
                        seed=cfg.train.seed, strict=cfg.data.strict, short_videos=cfg.data.short_videos)


def epoch_indices(n: int, seed: int, epoch: int, rank: int, world: int, per_rank: int) -> list[int]:
    """This rank's sample indices for ``epoch``: one seeded permutation of the whole dataset,
    cut to full global batches, dealt round-robin to the ranks."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    usable = (n // (per_rank * world)) * per_rank * world
    return perm[:usable][rank::world]


class RunSampler:
    """This rank's ``(epoch, index)`` pairs from ``start_step`` to ``last_step``: each epoch's
    :func:`epoch_indices`, entered mid-way when resuming. One sampler for the whole run lets the
    loader's workers live across epochs (no start-up bubble per epoch; their caches survive); the
    epoch travels with each index, so a sample is the same whichever worker draws it."""

    def __init__(self, n: int, seed: int, rank: int, world: int, per_step: int, steps_per_epoch: int,
                 start_step: int, last_step: int) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.per_step, self.steps_per_epoch = per_step, steps_per_epoch
        self.start_step, self.last_step = start_step, last_step

    def __len__(self) -> int:
        return max(self.last_step - self.start_step, 0) * self.per_step

    def __iter__(self):
        step = self.start_step
        while step < self.last_step:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            take = min(self.steps_per_epoch - in_epoch, self.last_step - step)
            indices = epoch_indices(self.n, self.seed, epoch, self.rank, self.world, self.per_step)
            for i in indices[in_epoch * self.per_step:(in_epoch + take) * self.per_step]:
                yield epoch, i
            step += take


@dataclass
class Plan:
    """Batch arithmetic, resolved once."""

    micro_batch: int  # per rank, per forward pass
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float

    @staticmethod
    def make(cfg: Config, dataset_len: int, world: int) -> Plan:
        t = cfg.train
        per_step = world * t.accumulate
        if t.batch_size % per_step:
            raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by world size {world} "
                              f"x train.accumulate {t.accumulate}")
        micro = t.batch_size // per_step
        steps = dataset_len // t.batch_size
        if steps == 0:
            raise ConfigError(f"train.batch_size {t.batch_size} exceeds the dataset ({dataset_len} videos)")
        total = steps * t.epochs
        lr = cfg.optim.lr * t.batch_size / cfg.optim.ref_batch
        return Plan(micro, steps, total, round(cfg.optim.warmup_epochs * steps), lr)


def _warn_queue_size(cfg: Config, dataset_len: int, logger: RunLogger) -> None:
    """A queue longer than one epoch of keys holds older keys of the same videos as negatives:
    instance discrimination then contradicts itself (common with the paper's queue on small data)."""
    method_cfg = cfg.method_config()
    spec = METHODS[cfg.method].data_spec(method_cfg)
    for key, per_video in spec.queue_keys.items():
        size = getattr(method_cfg, key)
        limit = (dataset_len - cfg.train.batch_size) * per_video
        if size > limit:
            logger.message(f"warning: {cfg.method}.{key}={size} exceeds the {limit} keys that fit in one epoch "
                           f"of {dataset_len} videos: the queue will hold keys of the query's own video as "
                           f"negatives. Use {cfg.method}.{key}<={max(limit, 1)}.")


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def train(cfg: Config, resume: str | None = None, asked: set[str] | None = None) -> Path:
    """Pretrain ``cfg.method``; returns the run folder. ``resume``: a checkpoint path; ``asked``:
    the keys the command line set (:func:`resumed_config`)."""
    ctx = setup(cfg.train.device, cfg.train.dist_timeout_s)
    try:
        with intra_op_threads(cfg.train.threads, cfg.data.num_workers):
            run = start_run(cfg, ctx, resume, asked)
            return run.train()
    finally:
        teardown(ctx)


# On resume every key comes from the checkpoint's config except these. The first follow this
# command line (given or default): where to stop and write, this machine's resources, what watches
# the run. The second change only when the command line sets them. Any other key set to another
# value than the checkpoint's is refused by name.
RESUME_FOLLOWS = ("train.out", "train.max_steps", "data.num_workers", "train.threads", "train.compile",
                  "train.monitor_every", "train.monitor_videos", "train.loggers")
RESUME_MAY_CHANGE = ("train.epochs", "train.log_every", "train.ckpt_every", "train.device", "train.dist_timeout_s",
                     "data.backend", "data.strict")


def resumed_config(cfg: Config, state: dict[str, Any], asked: set[str] | None = None) -> Config:
    """The checkpoint's config with the keys ``RESUME_FOLLOWS`` and, where the command line set
    them (``asked``), ``RESUME_MAY_CHANGE`` taken from ``cfg``; a ConfigError names every other key
    the command line set to a value the checkpoint's run did not have."""
    saved = config_from_yaml_text(state["config"])
    asked = asked or set()
    fixed = sorted(asked - set(RESUME_FOLLOWS) - set(RESUME_MAY_CHANGE))
    refused = [f"{key} ({value_at(saved, key)!r} in the checkpoint, {value_at(cfg, key)!r} asked)"
               for key in fixed if value_at(saved, key) != value_at(cfg, key)]
    if refused:
        raise ConfigError(f"cannot change on resume: {', '.join(refused)}. Keys that may change: "
                          f"{', '.join(RESUME_FOLLOWS + RESUME_MAY_CHANGE)}; start a new run for the rest")
    for key in RESUME_FOLLOWS + tuple(k for k in RESUME_MAY_CHANGE if k in asked):
        section, name = key.split(".")
        setattr(getattr(saved, section), name, value_at(cfg, key))
    validate(saved)
    return saved


@dataclass
class Run:
    """One pretraining run: what :func:`start_run` built, and the loop's counters."""

    cfg: Config
    ctx: DistContext
    plan: Plan
    dataset: VideoDataset
    method: Method  # what checkpoints save
    model: nn.Module  # what steps call: the method, wrapped in DDP and compiled as configured
    optimizer: torch.optim.Optimizer
    step: int
    last_step: int
    out: Path
    logger: RunLogger
    monitor: KNNMonitor | None = None
    skipped_videos: int = 0
    skipped_steps: int = 0
    # nan_policy=stop reads a step's loss on the host one step late, once the next step is queued:
    # a GPU then never waits for the host between steps (checked before every log line and checkpoint)
    unchecked: tuple[int, torch.Tensor, dict[str, torch.Tensor]] | None = field(default=None, repr=False)

    def train(self) -> Path:
        """Steps until ``last_step``: each one optimised, then logged and checkpointed as due."""
        self.method.train()
        batches = self.batches()
        while self.step < self.last_step:
            epoch = self.step // self.plan.steps_per_epoch
            self.method.set_epoch(epoch, self.cfg.train.epochs)
            loss, parts, lr, applied = self.optimisation_step(batches)
            self.step += 1
            self.log_and_checkpoint(epoch, loss, parts, lr, log=applied)
            if self.monitor and (self.step % self.cfg.train.monitor_every == 0 or self.step == self.last_step):
                self.logger.log_monitor(self.step, epoch, self.monitor(self.method.backbone))
        del batches  # stops the loader's workers
        self.logger.close()
        if self.ctx.is_main:
            self.logger.message(f"done: {self.step} steps; checkpoint {self.out / CHECKPOINT}"
                                + (f"; {self.skipped_videos} unusable videos skipped" if self.skipped_videos else ""))
        return self.out

    def batches(self) -> Iterator[dict]:
        """This rank's batches from the current step to the last, through the loader's workers."""
        per_step = self.plan.micro_batch * self.cfg.train.accumulate
        sampler = RunSampler(len(self.dataset), self.cfg.train.seed, self.ctx.rank, self.ctx.world_size, per_step,
                             self.plan.steps_per_epoch, self.step, self.last_step)
        workers = self.cfg.data.num_workers
        return iter(DataLoader(self.dataset, batch_size=self.plan.micro_batch, drop_last=True, sampler=sampler,
                               num_workers=workers, worker_init_fn=seed_worker, collate_fn=collate_samples,
                               persistent_workers=workers > 0, pin_memory=self.ctx.device.type == "cuda"))

    def optimisation_step(self, batches: Iterator[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, bool]:
        """Forward and backward over ``train.accumulate`` micro-batches, then the optimizer step
        (skipped, with the state the batch changed restored, for a non-finite loss under
        ``nan_policy=skip``). Returns the loss, its parts (on the device), the learning rate and
        whether the step was applied."""
        cfg, plan = self.cfg, self.plan
        lr = lr_at(self.step, plan.lr, plan.total_steps, plan.warmup_steps, cfg.optim.schedule,
                   cfg.optim.milestones, cfg.optim.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(cfg.train.seed * 1000003 + self.step)
        before = StateSnapshot(self.method) if cfg.train.nan_policy == "skip" else None
        loss_sum, totals = self.forward_backward(batches, generator)
        if before is not None and not math.isfinite(loss_value := float(loss_sum)):
            before.restore()
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.logger.message(f"non-finite loss {loss_value} at step {self.step}: step skipped, its queue, "
                                f"momentum-encoder and BatchNorm updates undone ({self.skipped_steps} so far)")
            return loss_sum, totals, lr, False
        if before is None:
            self.check_unchecked()  # the previous step's loss
            self.unchecked = (self.step, loss_sum, totals)
        if cfg.optim.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.optim.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, totals, lr, True

    def forward_backward(self, batches: Iterator[dict],
                         generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The gradients of one step's micro-batches; its loss and loss parts, kept on the device."""
        accumulate, device = self.cfg.train.accumulate, self.ctx.device
        use_amp = self.cfg.train.amp and device.type == "cuda"
        totals: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros((), device=device)
        for micro in range(accumulate):
            batch = next(batches)
            self.skipped_videos += int(batch["skipped"].sum())
            views = [v.to(device, non_blocking=True) for v in batch["views"]]
            info = {k: v.to(device, non_blocking=True) for k, v in batch["info"].items()}
            last_micro = micro == accumulate - 1
            sync = self.model.no_sync() if self.ctx.distributed and not last_micro else contextlib.nullcontext()
            begin_step(compile_mode(self.cfg.train.compile))
            with sync:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    loss, parts = self.model(views, info, generator)
                (loss / accumulate).backward()
            loss_sum += loss.detach() / accumulate
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / accumulate
        return loss_sum, totals

    def check_unchecked(self) -> None:
        """Raises for a non-finite loss of the step still unchecked (``nan_policy=stop``)."""
        if self.unchecked is None:
            return
        at, loss_sum, totals = self.unchecked
        self.unchecked = None
        if not math.isfinite(loss_value := float(loss_sum)):
            parts_text = {k: float(v) for k, v in totals.items()}
            raise TrainingError(f"non-finite loss {loss_value} at step {at} ({parts_text}); {self.last_good()}. "
                                "Lower optim.lr or set train.nan_policy=skip.")

    def last_good(self) -> str:
        """Where the run can restart from: the checkpoint on disk (only finite state is ever saved)."""
        path = self.out / CHECKPOINT
        return f"the last good checkpoint {path} is intact" if path.is_file() else "no checkpoint was written"

    def log_and_checkpoint(self, epoch: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], lr: float,
                           log: bool = True) -> None:
        """A log line every ``log_every`` steps (``log``: not for a skipped step); a checkpoint every
        ``ckpt_every`` steps, at every epoch's end and at the last step. Both only after the steps
        before them proved finite."""
        step = self.step
        log_now = log and (step % self.cfg.train.log_every == 0 or step == self.last_step)
        checkpoint_now = (step % self.cfg.train.ckpt_every == 0 or step % self.plan.steps_per_epoch == 0
                          or step == self.last_step)
        if log_now or checkpoint_now:
            self.check_unchecked()
        if self.ctx.is_main and log_now:
            self.logger.log(step, epoch, {"loss": float(loss), **{k: float(v) for k, v in parts.items()}, "lr": lr,
                                          "skipped_videos": float(self.skipped_videos)})
        if checkpoint_now and not all_finite(self.method.state_dict()):  # every rank holds the same weights
            raise TrainingError(f"the weights hold non-finite values after step {step} (a finite loss, "
                                f"then a non-finite update); {self.last_good()}. Lower optim.lr.")
        if checkpoint_now and self.ctx.is_main:
            save_atomic({"model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "step": step, "rng": _rng_state(self.ctx.device), "config": self.cfg.to_yaml(),
                         "method": self.cfg.method, "arch": self.cfg.arch()}, self.out / CHECKPOINT)


class StateSnapshot:
    """A copy of what a step changes besides the optimised parameters and their optimizer state:
    buffers (queues, BatchNorm statistics) and parameters without gradient (momentum encoders), so
    that a skipped step can be undone."""

    def __init__(self, module: nn.Module) -> None:
        self.tensors = list(module.buffers()) + [p for p in module.parameters() if not p.requires_grad]
        self.copies = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def restore(self) -> None:
        for t, saved in zip(self.tensors, self.copies, strict=True):
            t.copy_(saved)


def start_run(cfg: Config, ctx: DistContext, resume: str | None, asked: set[str] | None = None) -> Run:
    """Builds a run from ``cfg``, or continues the checkpoint ``resume`` exactly where it stopped."""
    state = load_checkpoint(resume) if resume else None
    if state is not None:
        check_resumable(state, resume)
        cfg = resumed_config(cfg, state, asked)
    torch.manual_seed(cfg.train.seed)
    dataset = build_dataset(cfg)
    plan = Plan.make(cfg, len(dataset), ctx.world_size)
    if state is None:
        check_init(cfg)
    method, init_report = build_method(cfg, ctx.distributed, init=state is None)
    method = (sync_batch_norm(method, ctx) if cfg.model.sync_bn else method).to(ctx.device)
    optimizer = build_optimizer(cfg.optim.name, method, plan.lr, cfg.optim.momentum, cfg.optim.weight_decay,
                                cfg.optim.decay_all)
    step = 0 if state is None else load_training_state(state, method, optimizer, ctx.device, resume)
    model: nn.Module = method
    if ctx.distributed:
        model = DistributedDataParallel(method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                        broadcast_buffers=False, find_unused_parameters=method.unused_parameters)
    mode = compile_mode(cfg.train.compile)
    if mode:
        model = compile_step(model, mode)  # checkpoints save `method`, whose keys are unchanged
    out = Path(cfg.train.out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        remove_stale_temporaries(out, CHECKPOINT)
    last_step = min(plan.total_steps, cfg.train.max_steps) if cfg.train.max_steps else plan.total_steps
    backends = open_backends(cfg.train.loggers, out, cfg.to_dict()) if ctx.is_main else []
    logger = RunLogger(out, last_step, ctx.is_main, start_step=step, backends=backends)
    if ctx.is_main:
        logger.message(f"{cfg.method}: {len(dataset)} videos, {cfg.arch()}, global batch "
                       f"{cfg.train.batch_size} ({ctx.world_size} rank(s) x {plan.micro_batch} x "
                       f"{cfg.train.accumulate} accumulation), {plan.steps_per_epoch} steps/epoch, lr {plan.lr:.4g}, "
                       f"device {ctx.device} ({torch.get_num_threads()} threads, {cfg.data.num_workers} workers), "
                       f"run folder {out}" + (f", compiled ({mode})" if mode else "")
                       + (f", resumed at step {step}" if step else ""))
        _warn_queue_size(cfg, len(dataset), logger)
        if init_report is not None:
            logger.message(init_report.describe())
    clip_len = getattr(cfg.method_config(), "clip_len", 8)
    monitor = build_monitor(cfg, clip_len, method.backbone.kind) if ctx.is_main else None
    return Run(cfg, ctx, plan, dataset, method, model, optimizer, step, last_step, out, logger, monitor)


def load_training_state(state: dict[str, Any], method: Method, optimizer: torch.optim.Optimizer,
                        device: torch.device, path: str) -> int:
    """Restores model, optimizer and RNG state from a checkpoint; returns its step."""
    load_weights(method, state["model"], path, f"{type(method).__name__} as configured")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:
        raise ConfigError(f"{path}: its optimizer state does not fit this model's parameters ({exc}); "
                          "it can still be evaluated and exported, but training cannot resume from it") from exc
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return int(state["step"])
