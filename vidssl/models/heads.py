"""Projection and classification heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(dims: list[int] | tuple[int, ...], batch_norm: bool = False, last_bn: bool = False) -> nn.Sequential:
    """``dims[0] -> dims[1] -> ... -> dims[-1]`` with ReLU (and optionally BatchNorm) between
    layers. SeCo's heads are ``mlp([2048, 2048, 128])`` (no BN); SimCLR/CORP use BN."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (batch_norm and (not last or last_bn))))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


class MultiHeadEncoder(nn.Module):
    """A backbone and named projection heads ``mlp([in, hidden, out])`` on its pooled features (SeCo's
    and VCLR's one head per loss, MoCo-v2's one). The online and momentum encoders share this shape."""

    def __init__(self, backbone: nn.Module, names: list[str] | tuple[str, ...], hidden: int, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: mlp([backbone.feature_dim, hidden, out_dim]) for name in names})

    def project(self, h: torch.Tensor, names: list[str] | tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """The heads ``names`` (default: all) on backbone features ``(..., D)``, each L2-normalised."""
        return {name: F.normalize(self.heads[name](h), dim=-1) for name in (self.heads if names is None else names)}
