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


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter (MoCo eq. 2)."""
    for pk, pq in zip(target.parameters(), online.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)
