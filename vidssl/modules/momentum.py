"""Momentum (EMA) encoders and the MoCo skeleton that MoCo-v2, SeCo and VCLR share.

Policy for BatchNorm buffers: the momentum copy keeps its *own* running statistics, computed by
its own forward passes in train mode (as MoCo); only parameters are averaged. Buffers are never
copied from the online network after construction.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation


@dataclass
class MomentumConfig:
    """The settings MoCo-v2, SeCo and VCLR share (their config sections inherit them)."""

    tau: float = 0.1
    queue_size: int = 256  # keep it below one epoch of keys (the run warns otherwise)
    momentum: float = 0.99  # the papers: 0.999
    head_hidden: int | None = None  # None: the backbone's feature size, the papers' ratio (2048 on R50's 2048)
    head_dim: int = 128
    shuffle_bn_splits: int = 2  # single-process emulation of per-GPU BN; ignored under DDP

    def validate(self) -> None:
        if self.head_hidden is not None and self.head_hidden < 1:
            raise ValueError(f"{self.section}.head_hidden must be positive or null (the backbone's feature "
                             f"size), got {self.head_hidden}")

    @property
    def section(self) -> str:
        return type(self).__name__.removesuffix("Config").lower()


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to be updated by :func:`ema_update_`."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter (MoCo eq. 2), as one
    multi-tensor lerp over the two parameter lists."""
    pk, pq = list(target.parameters()), list(online.parameters())
    if len(pk) != len(pq):
        raise ValueError(f"EMA: the target has {len(pk)} parameters, the online network {len(pq)}")
    torch._foreach_lerp_(pk, pq, 1.0 - momentum)


class MomentumEncoders(nn.Module):
    """MoCo's two encoders: ``encoder_q`` (online, trained by gradient) and ``encoder_k`` (its EMA,
    frozen). Both must have a ``backbone`` attribute. A step draws its shuffle-BN permutation first
    (:meth:`key_permutation`, host work, done before any compiled graph begins), then
    :meth:`key_features` is its key side: the EMA update, then the momentum backbone on the key
    views with shuffle-BN."""

    def __init__(self, encoder: nn.Module, momentum: float, shuffle_bn_splits: int, distributed: bool) -> None:
        super().__init__()
        self.encoder_q = encoder
        self.encoder_k = momentum_copy(encoder)
        self.momentum = momentum
        self.shuffle_bn_splits = shuffle_bn_splits  # single-process emulation of per-GPU BN
        self.distributed = distributed

    def key_permutation(self, keys: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """Shuffle-BN's permutation for ``keys`` key views per rank, from the step's ``generator``."""
        return shuffle_permutation(keys, self.distributed, generator, device)

    @torch.no_grad()
    def key_features(self, keys: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """The momentum backbone's features of ``keys`` ``(N, ...)``, after the EMA update, computed
        on the batch shuffled by ``perm`` across ranks (or split in ``shuffle_bn_splits`` chunks on
        one process) so that BatchNorm cannot tell a query's key by its batch statistics (MoCo §3.3)."""
        ema_update_(self.encoder_k, self.encoder_q, self.momentum)
        return shuffle_bn_forward(self.encoder_k.backbone, keys, perm, self.distributed, self.shuffle_bn_splits)
