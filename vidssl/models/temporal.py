"""MLFO's feature-level temporal modelling (Sec. 3.3): temporal transformations of feature maps,
the motion-excitation module of TEA (Li et al., CVPR 2020) and the side branches built on it.

Feature maps are ``(B, C, T, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.models.heads import mlp

TEMPORAL_AUGS = ("reverse", "shuffle")


def time_reverse(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)


def time_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The time steps in a random order other than the original (one permutation for the batch;
    with two steps that is the reversal)."""
    t = x.shape[2]
    if t < 2:
        raise ValueError("time_shuffle needs at least 2 time steps")
    while True:
        perm = torch.randperm(t, generator=generator)
        if not torch.equal(perm, torch.arange(t)):
            return x[:, :, perm.to(x.device)]


def temporal_augment(x: torch.Tensor, name: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Aug_k`` of MLFO eq. 12 (and of the input-level baseline): ``reverse`` or ``shuffle``."""
    if name == "reverse":
        return time_reverse(x)
    if name == "shuffle":
        return time_shuffle(x, generator)
    raise ValueError(f"unknown temporal augmentation {name!r}; choose from {TEMPORAL_AUGS}")


class MotionExcitation(nn.Module):
    """TEA's motion excitation: channels squeezed by ``reduction``; the feature-level motion
    ``M(t) = conv(X_r(t+1)) - X_r(t)`` (channel-wise 3x3 conv, zero for the last step), spatially
    pooled, expanded back, and used as an attention ``A = sigmoid(M) - 1/2``:
    ``out = X + X * A``. Its output depends on the order of time steps, which pooling alone does not."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        r = max(channels // reduction, 1)
        self.squeeze = nn.Sequential(nn.Conv3d(channels, r, 1, bias=False), nn.BatchNorm3d(r))
        self.transform = nn.Conv2d(r, r, 3, padding=1, groups=r, bias=False)
        self.expand = nn.Sequential(nn.Conv3d(r, channels, 1, bias=False), nn.BatchNorm3d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.squeeze(x)
        b, r, t, h, w = f.shape
        later = self.transform(f[:, :, 1:].transpose(1, 2).reshape(b * (t - 1), r, h, w))
        later = later.reshape(b, t - 1, r, h, w).transpose(1, 2)
        motion = F.pad(later - f[:, :, :-1], (0, 0, 0, 0, 0, 1))  # (B, r, T, H, W), zero at the last step
        attention = torch.sigmoid(self.expand(motion.mean((3, 4), keepdim=True))) - 0.5
        return x + x * attention


class MotionBranch(nn.Module):
    """A side branch of eq. 11: ME (or the identity when ``excitation`` is False), spatio-temporal
    average pooling, a two-layer MLP, L2 normalisation."""

    def __init__(self, channels: int, hidden: int, dim: int, excitation: bool = True, reduction: int = 16) -> None:
        super().__init__()
        self.excite = MotionExcitation(channels, reduction) if excitation else nn.Identity()
        self.head = mlp([channels, hidden, dim], batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.excite(x).flatten(2).mean(-1)), dim=-1)


class StepHead(nn.Module):
    """Per-time-step embeddings for timestamp retrieval (eq. 13): spatial average pooling, a
    two-layer MLP applied to every step, L2 normalisation. ``(B, C, T, H, W) -> (B, T, dim)``."""

    def __init__(self, channels: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.head = mlp([channels, hidden, dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x.mean((3, 4)).transpose(1, 2)), dim=-1)
