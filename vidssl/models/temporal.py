"""MLFO's feature-level temporal modelling (Sec. 3.3): temporal transformations of feature maps,
the motion-excitation module of TEA (Li et al., CVPR 2020) and the side branches built on it.

Feature maps are ``(B, C, T, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.models.heads import mlp
from vidssl.modules.device import host_to_device

TEMPORAL_AUGS = ("reverse", "shuffle")


def time_order(name: str, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The order in which ``Aug_k`` (MLFO eq. 12) puts ``t`` time steps: ``reverse`` (last to first)
    or ``shuffle`` (a random order other than the original; with two steps that is the reversal)."""
    if name == "reverse":
        return torch.arange(t - 1, -1, -1)
    if name == "shuffle":
        if t < 2:
            raise ValueError("a shuffled time order needs at least 2 time steps")
        while True:
            perm = torch.randperm(t, generator=generator)
            if not torch.equal(perm, torch.arange(t)):
                return perm
    raise ValueError(f"unknown temporal augmentation {name!r}; choose from {TEMPORAL_AUGS}")


def temporal_augment(x: torch.Tensor, name: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Aug_k(x)`` of MLFO eq. 12 (and of the input-level baseline) on ``(B, C, T, H, W)``; one
    order for the whole batch."""
    return x[:, :, time_order(name, x.shape[2], generator).to(x.device)]


def pointwise(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 ``Conv3d`` without bias applied to ``(B, C, T, H, W)`` as one matrix product over the
    channels: the same values, about a third of the CPU time of the convolution and its backward."""
    return F.linear(x.movedim(1, -1), conv.weight.flatten(1)).movedim(-1, 1)


class MotionExcitation(nn.Module):
    """TEA's motion excitation: channels squeezed by ``reduction``; the feature-level motion
    ``M(t) = conv(X_r(t+1)) - X_r(t)`` (channel-wise 3x3 conv, zero for the last step), spatially
    pooled, expanded back, and used as an attention ``A = sigmoid(M) - 1/2``:
    ``out = X + X * A``. Its output depends on the order of time steps, which pooling alone does not.

    The squeeze and expand layers are 1x1x1 convolutions (``squeeze.0``, ``expand.0``), computed as
    matrix products (:func:`pointwise`)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        r = max(channels // reduction, 1)
        self.squeeze = nn.Sequential(nn.Conv3d(channels, r, 1, bias=False), nn.BatchNorm3d(r))
        self.transform = nn.Conv2d(r, r, 3, padding=1, groups=r, bias=False)
        self.expand = nn.Sequential(nn.Conv3d(r, channels, 1, bias=False), nn.BatchNorm3d(channels))

    def squeezed(self, x: torch.Tensor) -> torch.Tensor:
        """``X_r``: ``(B, C, T, H, W) -> (B, r, T, H, W)``."""
        return self.squeeze[1](pointwise(self.squeeze[0], x))

    def motion(self, squeezed: torch.Tensor) -> torch.Tensor:
        """``M`` spatially pooled, ``(B, r, T)``, from ``X_r``. Samples are independent here (no
        BatchNorm), so clips in several time orders can share one call."""
        b, r, t, h, w = squeezed.shape
        later = self.transform(squeezed[:, :, 1:].transpose(1, 2).reshape(b * (t - 1), r, h, w))
        later = later.reshape(b, t - 1, r, h, w).transpose(1, 2)
        return F.pad((later - squeezed[:, :, :-1]).mean((3, 4)), (0, 1))  # zero at the last step

    def attention(self, motion: torch.Tensor) -> torch.Tensor:
        """``A`` ``(B, C, T)`` from the pooled motion ``(B, r, T)`` (the expand's BatchNorm sees one
        batch of clips)."""
        return torch.sigmoid(self.expand[1](pointwise(self.expand[0], motion[..., None, None]))).flatten(2) - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.attention(self.motion(self.squeezed(x)))[..., None, None]


class MotionBranch(nn.Module):
    """A side branch of eq. 11: ME (or the identity when ``excitation`` is False), spatio-temporal
    average pooling, a two-layer MLP, L2 normalisation."""

    def __init__(self, channels: int, hidden: int, dim: int, excitation: bool = True, reduction: int = 16) -> None:
        super().__init__()
        self.excite = MotionExcitation(channels, reduction) if excitation else None
        self.head = mlp([channels, hidden, dim], batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, dim)``."""
        return self.reordered(x, [None])[:, 0]

    def reordered(self, x: torch.Tensor, orders: list[torch.Tensor | None]) -> torch.Tensor:
        """The branch applied to ``x[:, :, order]`` for each time order (``None``: as it is), each
        as its own batch: ``(B, len(orders), dim)``.

        Computed without the excited or reordered full maps, with the same result: ``A`` is constant
        over space, so pooling ``X + X * A`` is ``mean_t(x_t * (1 + A_t))`` with ``x_t`` the spatial
        mean of step ``t``; and the squeeze (a 1x1x1 convolution and BatchNorm over batch, time and
        space) commutes with reordering time, so it runs once for all orders (its BN running
        statistics, unused by the method, are updated once per call rather than once per order). The
        channel-wise motion convolution runs once over every order's clips; the expand and the head
        (BatchNorm) run per order."""
        steps = x.mean((3, 4))  # (B, C, T)
        if self.excite is None:
            pooled = [steps.mean(-1)] * len(orders)
        else:
            index = [slice(None) if order is None else host_to_device(order, x.device) for order in orders]
            squeezed = self.excite.squeezed(x)
            motions = self.excite.motion(torch.cat([squeezed[:, :, o] for o in index])).chunk(len(orders))
            pooled = [(steps[:, :, o] * (1 + self.excite.attention(m))).mean(-1)
                      for o, m in zip(index, motions, strict=True)]
        return torch.stack([F.normalize(self.head(p), dim=-1) for p in pooled], dim=1)


class StepHead(nn.Module):
    """Per-time-step embeddings for timestamp retrieval (eq. 13): spatial average pooling, a
    two-layer MLP applied to every step, L2 normalisation. ``(B, C, T, H, W) -> (B, T, dim)``."""

    def __init__(self, channels: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.head = mlp([channels, hidden, dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_steps(x.mean((3, 4)))

    def embed_steps(self, steps: torch.Tensor) -> torch.Tensor:
        """The embeddings of spatially pooled time steps ``(B, C, T) -> (B, T, dim)``."""
        return F.normalize(self.head(steps.transpose(1, 2)), dim=-1)
