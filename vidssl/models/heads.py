"""Projection and classification heads."""

from __future__ import annotations

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
