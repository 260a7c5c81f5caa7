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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vidssl.data.dataset import FileOpener, VideoDataset, collate_samples, seed_worker
from vidssl.data.records import VideoSource
from vidssl.data.sources import load_source
from vidssl.data.synthetic import SyntheticVideos
from vidssl.data.transforms import ClipAugment
from vidssl.engine.checkpoint import load_checkpoint, save_atomic
from vidssl.engine.compile import begin_step, compile_step
from vidssl.engine.config import Config, config_from_yaml_text
from vidssl.engine.distributed import DistContext, setup, teardown
from vidssl.engine.logger import RunLogger
from vidssl.engine.optim import build_optimizer, lr_at
from vidssl.engine.threads import intra_op_threads
from vidssl.errors import ConfigError, VidsslError
from vidssl.methods import METHODS
from vidssl.models.backbones import Backbone

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


class TrainingError(VidsslError):
    """The run cannot go on (non-finite loss, ...); the last good checkpoint is intact."""


def build_source(cfg: Config) -> tuple[VideoSource, Any]:
    """The dataset's records and its reader factory (the built-in synthetic set by default)."""
    d = cfg.data
    if d.source == "synthetic":
        videos = SyntheticVideos(d.synthetic_videos, d.synthetic_size, d.synthetic_frames,
                                 d.synthetic_seed, d.synthetic_labels, d.synthetic_clips_per_group)
        return videos.source(d.subset if d.subset in ("train", "test") else "all"), videos.open
    source = load_source(d.source, d.layout, d.split, d.subset, d.root or None)
    return source, FileOpener(d.backend)


def build_method(cfg: Config, distributed: bool) -> nn.Module:
    backbone = Backbone(cfg.arch())
    method_cls = METHODS[cfg.method]
    return method_cls(cfg.method_config(), backbone, distributed)


def build_dataset(cfg: Config) -> VideoDataset:
    source, opener = build_source(cfg)
    spec = METHODS[cfg.method].data_spec(cfg.method_config())
    a = cfg.augment
    transform = ClipAugment(size=a.size, scale=tuple(a.scale), jitter=tuple(a.jitter), p_jitter=a.p_jitter,
                            p_gray=a.p_gray, p_blur=a.p_blur, per_frame_jitter=a.per_frame_jitter,
                            mean=tuple(a.mean), std=tuple(a.std))
    return VideoDataset(source, spec["sampler"], transform, opener, repeat=spec["repeat"],
                        layout=spec["layout"], seed=cfg.train.seed, strict=cfg.data.strict,
                        short_videos=cfg.data.short_videos)


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


def _warn_queue_size(cfg: Config, dataset_len: int, logger: RunLogger | None) -> None:
    """A queue longer than one epoch of keys holds older keys of the same videos as negatives:
    instance discrimination then contradicts itself (common with the paper's queue on small data)."""
    method_cfg = cfg.method_config()
    spec = METHODS[cfg.method].data_spec(method_cfg)
    for key, per_video in spec.get("queue_keys", {}).items():
        size = getattr(method_cfg, key)
        limit = (dataset_len - cfg.train.batch_size) * per_video
        if logger is not None and size > limit:
            logger.message(f"warning: {cfg.method}.{key}={size} exceeds the {limit} keys that fit in one epoch "
                           f"of {dataset_len} videos: the queue will hold keys of the query's own video as "
                           f"negatives. Use {cfg.method}.{key}<={max(limit, 1)}.")


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def train(cfg: Config, resume: str | None = None) -> Path:
    """Pretrain ``cfg.method``; returns the run folder. ``resume``: a checkpoint path."""
    ctx = setup(cfg.train.device, cfg.train.dist_timeout_s)
    try:
        with intra_op_threads(cfg.train.threads, cfg.data.num_workers):
            return _train(cfg, ctx, resume)
    finally:
        teardown(ctx)


def _train(cfg: Config, ctx: DistContext, resume: str | None) -> Path:
    out = Path(cfg.train.out)
    state = None
    if resume:
        state = load_checkpoint(resume)
        saved = config_from_yaml_text(state["config"])
        saved.train.max_steps, saved.train.out = cfg.train.max_steps, cfg.train.out
        saved.data.num_workers, saved.train.threads = cfg.data.num_workers, cfg.train.threads  # this machine's
        saved.train.compile, saved.train.compile_mode = cfg.train.compile, cfg.train.compile_mode
        cfg = saved
    torch.manual_seed(cfg.train.seed)
    dataset = build_dataset(cfg)
    plan = Plan.make(cfg, len(dataset), ctx.world_size)
    method = build_method(cfg, ctx.distributed).to(ctx.device)
    optimizer = build_optimizer(cfg.optim.name, method, plan.lr, cfg.optim.momentum, cfg.optim.weight_decay)
    step = 0
    if state is not None:
        method.load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. a checkpoint of an older vidssl whose heads were separate tensors
            raise ConfigError(f"{resume}: its optimizer state does not fit this model's parameters ({exc}); "
                              "it can still be evaluated and exported, but training cannot resume from it") from exc
        step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], ctx.device)
    model: nn.Module = method
    if ctx.distributed:
        model = DistributedDataParallel(method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                        broadcast_buffers=False,
                                        # stage-wise methods (MLFO) leave some parameters without gradient in some steps
                                        find_unused_parameters=getattr(method, "unused_parameters", False))
    compile_mode = cfg.train.compile_mode if cfg.train.compile else None
    if compile_mode:
        model = compile_step(model, compile_mode)  # checkpoints save `method`, whose keys are unchanged
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
    last_step = plan.total_steps if not cfg.train.max_steps else min(plan.total_steps, cfg.train.max_steps)
    logger = RunLogger(out, last_step, ctx.is_main, start_step=step)
    if ctx.is_main:
        logger.message(f"{cfg.method}: {len(dataset)} videos, {cfg.arch()}, global batch "
                       f"{cfg.train.batch_size} ({ctx.world_size} rank(s) x {plan.micro_batch} x "
                       f"{cfg.train.accumulate} accumulation), {plan.steps_per_epoch} steps/epoch, lr {plan.lr:.4g}, "
                       f"device {ctx.device} ({torch.get_num_threads()} threads, {cfg.data.num_workers} workers), "
                       f"run folder {out}" + (f", compiled ({compile_mode})" if compile_mode else "")
                       + (f", resumed at step {step}" if step else ""))
    _warn_queue_size(cfg, len(dataset), logger if ctx.is_main else None)
    use_amp = cfg.train.amp and ctx.device.type == "cuda"
    skipped_videos, skipped_steps = 0, 0

    def checkpoint() -> None:
        if ctx.is_main:
            save_atomic({"model": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "rng": _rng_state(ctx.device), "config": cfg.to_yaml(), "method": cfg.method,
                         "arch": cfg.arch()}, out / CHECKPOINT)

    # nan_policy=stop reads each step's loss on the host one step late, once the next step's forward
    # and backward are queued: a GPU then never waits for the host between steps. The pending step
    # is also checked before every log line and checkpoint, so a non-finite step never reaches disk.
    unchecked: tuple[int, torch.Tensor, dict[str, torch.Tensor]] | None = None

    def check_unchecked() -> None:
        nonlocal unchecked
        if unchecked is not None:
            at, loss_sum, totals = unchecked
            unchecked = None
            if not math.isfinite(loss_value := float(loss_sum)):
                parts_text = {k: float(v) for k, v in totals.items()}
                raise TrainingError(f"non-finite loss {loss_value} at step {at} ({parts_text}); the last "
                                    f"good checkpoint {out / CHECKPOINT} is intact. Lower optim.lr or "
                                    "set train.nan_policy=skip.")

    method.train()
    per_step = plan.micro_batch * cfg.train.accumulate
    loader = DataLoader(dataset, batch_size=plan.micro_batch, drop_last=True,
                        sampler=RunSampler(len(dataset), cfg.train.seed, ctx.rank, ctx.world_size, per_step,
                                           plan.steps_per_epoch, step, last_step),
                        num_workers=cfg.data.num_workers, worker_init_fn=seed_worker, collate_fn=collate_samples,
                        persistent_workers=cfg.data.num_workers > 0, pin_memory=ctx.device.type == "cuda")
    batches = iter(loader)
    while step < last_step:
        epoch = step // plan.steps_per_epoch
        if hasattr(method, "set_epoch"):  # methods with epoch-based stages (MLFO)
            method.set_epoch(epoch, cfg.train.epochs)
        lr = lr_at(step, plan.lr, plan.total_steps, plan.warmup_steps, cfg.optim.schedule,
                   cfg.optim.milestones, cfg.optim.gamma)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(cfg.train.seed * 1000003 + step)
        totals: dict[str, torch.Tensor] = {}  # loss parts, kept on the device until logged
        loss_sum = torch.zeros((), device=ctx.device)
        for micro in range(cfg.train.accumulate):
            batch = next(batches)
            skipped_videos += int(batch["skipped"].sum())
            views = [v.to(ctx.device, non_blocking=True) for v in batch["views"]]
            info = {k: v.to(ctx.device, non_blocking=True) for k, v in batch["info"].items()}
            sync = contextlib.nullcontext()
            if ctx.distributed and micro < cfg.train.accumulate - 1:
                sync = model.no_sync()
            begin_step(compile_mode)
            with sync:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    loss, parts = model(views, info, generator)
                (loss / cfg.train.accumulate).backward()
            loss_sum += loss.detach() / cfg.train.accumulate
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / cfg.train.accumulate
        if cfg.train.nan_policy == "skip":  # known finite before it is applied: one host read per step
            if not math.isfinite(loss_value := float(loss_sum)):
                optimizer.zero_grad(set_to_none=True)
                skipped_steps += 1
                logger.message(f"non-finite loss {loss_value} at step {step}: step skipped "
                               f"({skipped_steps} so far)")
                step += 1
                continue
        else:
            check_unchecked()  # the previous step's loss
            unchecked = (step, loss_sum, totals)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log_now = step % cfg.train.log_every == 0 or step == last_step
        checkpoint_now = step % cfg.train.ckpt_every == 0 or step % plan.steps_per_epoch == 0 or step == last_step
        if log_now or checkpoint_now:
            check_unchecked()
        if ctx.is_main and log_now:
            logger.log(step, epoch, {"loss": float(loss_sum), **{k: float(v) for k, v in totals.items()}, "lr": lr,
                                     "skipped_videos": float(skipped_videos)})
        if checkpoint_now:
            checkpoint()
    del batches, loader  # stops the workers
    logger.close()
    if ctx.is_main:
        logger.message(f"done: {step} steps; checkpoint {out / CHECKPOINT}"
                       + (f"; {skipped_videos} unusable videos skipped" if skipped_videos else ""))
    return out
