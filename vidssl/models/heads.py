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


def check_head_hidden(section: str, hidden: int | None) -> None:
    """A projection head's hidden width: ``None`` (the backbone's feature size) or positive."""
    if hidden is not None and hidden < 1:
        raise ValueError(f"{section}.head_hidden must be positive or null (the backbone's feature size), got {hidden}")


class ParallelHeads(nn.Module):
    """Independent two-layer MLP heads ``in -> hidden -> ReLU -> out`` on the same input (SeCo's
    and VCLR's per-loss projection heads), computed together: every first layer in one matrix
    product, every second layer in one batched product. Each head has its own weights, initialised
    as ``nn.Linear`` (uniform in ``±1/sqrt(fan_in)``); biases are 1-D (no weight decay).
    ``(M, in) -> (M, heads, out)``; the head order is ``names``."""

    def __init__(self, names: list[str] | tuple[str, ...], in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.names = tuple(names)
        n = len(self.names)
        self.hidden, self.out_dim = hidden, out_dim
        self.weight1 = nn.Parameter(torch.empty(n * hidden, in_dim))
        self.bias1 = nn.Parameter(torch.empty(n * hidden))
        self.weight2 = nn.Parameter(torch.empty(n, hidden, out_dim))
        self.bias2 = nn.Parameter(torch.empty(n * out_dim))
        for p, fan_in in ((self.weight1, in_dim), (self.bias1, in_dim), (self.weight2, hidden), (self.bias2, hidden)):
            nn.init.uniform_(p, -fan_in ** -0.5, fan_in ** -0.5)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        """Also loads checkpoints written before the heads were computed together: one ``mlp``
        per name (``<prefix><name>.0.weight`` ... ``<name>.2.bias``) becomes the stacked layout."""
        old = [f"{prefix}{name}.{i}.{kind}" for name in self.names for i in (0, 2) for kind in ("weight", "bias")]
        if f"{prefix}weight1" not in state_dict and all(k in state_dict for k in old):
            per_head = [[state_dict.pop(f"{prefix}{name}.{i}.{kind}") for i in (0, 2) for kind in ("weight", "bias")]
                        for name in self.names]
            state_dict[f"{prefix}weight1"] = torch.cat([w1 for w1, _, _, _ in per_head])
            state_dict[f"{prefix}bias1"] = torch.cat([b1 for _, b1, _, _ in per_head])
            state_dict[f"{prefix}weight2"] = torch.stack([w2.T for _, _, w2, _ in per_head])
            state_dict[f"{prefix}bias2"] = torch.cat([b2 for _, _, _, b2 in per_head])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, names: list[str] | tuple[str, ...] | None = None) -> torch.Tensor:
        """``(M, in) -> (M, len(names), out)``: the heads ``names`` (default: all, in ``self.names``
        order) on every row. A subset computes only its own heads."""
        w1, b1, w2, b2 = self.weight1, self.bias1, self.weight2, self.bias2
        n = len(self.names)
        if names is not None and tuple(names) != self.names:
            idx = [self.names.index(name) for name in names]
            n = len(idx)
            adjacent = idx == list(range(idx[0], idx[0] + n))
            sel = slice(idx[0], idx[0] + n) if adjacent else idx  # a slice indexes by views, no copies
            w1 = w1.view(-1, self.hidden, w1.shape[1])[sel].flatten(0, 1)
            b1 = b1.view(-1, self.hidden)[sel].flatten()
            w2, b2 = w2[sel], b2.view(-1, self.out_dim)[sel].flatten()
        h = F.relu(F.linear(x, w1, b1)).view(len(x), n, self.hidden).transpose(0, 1)
        return torch.baddbmm(b2.view(n, 1, self.out_dim), h, w2).transpose(0, 1)
