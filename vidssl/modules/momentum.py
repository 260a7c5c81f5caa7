"""Momentum (EMA) encoders.

Policy for BatchNorm buffers: the momentum copy keeps its *own* running statistics, computed by
its own forward passes in train mode (as MoCo); only parameters are averaged. Buffers are never
copied from the online network after construction.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to be updated by :func:`ema_update_`."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def parameter_list(module: nn.Module) -> list[nn.Parameter]:
    """``list(module.parameters())``: the same parameters in the same order (depth-first, each
    shared parameter once), by a plain walk over ``_modules``, about 3x cheaper than the generator
    chain of ``parameters()`` (which the EMA update would pay twice per step)."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    stack = [module]
    while stack:
        mod = stack.pop()
        for p in mod._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        stack.extend(m for m in reversed(mod._modules.values()) if m is not None)
    return out


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter (MoCo eq. 2), as one
    multi-tensor lerp (a handful of kernels instead of two per parameter)."""
    pk, pq = parameter_list(target), parameter_list(online)
    if len(pk) != len(pq):
        raise ValueError(f"EMA: the target has {len(pk)} parameters, the online network {len(pq)}")
    torch._foreach_lerp_(pk, pq, 1.0 - momentum)
