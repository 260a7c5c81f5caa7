"""Optimizers (SGD, LARS, Adam) and the per-iteration learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from vidssl.errors import ConfigError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio ``eta * ||w|| / (||g|| + wd * ||w||)``
    (You et al. 2017), as used by SimCLR/CORP. Parameter groups with ``lars=False`` (biases and
    normalisation parameters, by :func:`param_groups`) get plain SGD without weight decay.

    Each group is updated with multi-tensor (``torch._foreach_*``) operations: the norms of all
    its weights and gradients in one pass, a handful of kernels per group instead of eight per
    parameter (on a GPU, launches; ResNet-50 has 161 parameters)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "eta": eta, "lars": True})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                    torch.ones_like(w_norm))
                torch._foreach_mul_(grads, trust.unbind())
            # buf <- m * buf + g; a buffer starts at zero, so a parameter's first update is its g
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float, lars: bool = False, decay_all: bool = False) -> list[dict]:
    """Weight decay (and LARS adaptation) on weights of rank >= 2 only; none on biases and norms,
    unless ``decay_all`` (the official MoCo, SeCo and VCLR code decays every parameter). ``lars``:
    tag each group with whether :class:`LARS` adapts it (the groups of that optimizer)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 or decay_all else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lars:
        groups[0]["lars"], groups[1]["lars"] = True, False
    return groups


def fused_available(params: list[torch.Tensor]) -> bool:
    """Whether PyTorch's fused (one kernel for all parameters) SGD/Adam can take ``params``: float
    tensors on CPU or CUDA. Same update rule as the per-parameter loop; on 2 CPU cores 3-5x faster
    (``docs/benchmarks.md``)."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def build_optimizer(name: str, model: nn.Module, lr: float, momentum: float,
                    weight_decay: float, decay_all: bool = False) -> torch.optim.Optimizer:
    """Build after the model is on its device (the fused kernels are chosen by device)."""
    groups = param_groups(model, weight_decay, lars=name == "lars", decay_all=decay_all)
    fused = fused_available([p for g in groups for p in g["params"]])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    raise ConfigError(f"optim.name: unknown optimizer {name!r} (sgd, lars, adam)")


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, schedule: str,
          milestones: list[float], gamma: float) -> float:
    """Linear warm-up over ``warmup_steps``, then half-cosine decay to 0 (``cosine``) or a decay by
    ``gamma`` at each milestone fraction of ``total_steps`` (``step``). Evaluated every iteration."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * gamma ** sum(step >= m * total_steps for m in milestones)
    raise ConfigError(f"optim.schedule: unknown schedule {schedule!r} (cosine, step)")
