"""CORP's relation heads on a pair of projected clip features (CORP Sec. 3.2 and 3.4).

- :class:`MixedAttention` (eq. 1-2): ``r(z_i, z_j) = [<U_h z_i, V_h z_j>]_h`` (h heads) → one MLP →
  ``num_outputs`` logits. Similarity and order share every neuron.
- :class:`DecouplingAttention` (eq. 7-8, heads kept as vectors): the symmetric part
  ``s = G z_i * G z_j`` and the antisymmetric part ``a = P z_i * Q z_j - Q z_i * P z_j``. The paper
  leaves open how the MLP combines them; vidssl gives each its own MLP, so that the paper's claim
  holds exactly: the same-video logit reads only ``s`` (gradient only on G), the order logit only
  ``a`` (gradient only on P, Q). Their combination into CORP_m's 3 classes follows eq. 6:
  ``P(P2) = P(not P1) * P(P2 | not P1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def standardise(r: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer normalisation of a relation vector before its MLP. **Open choice**
    (not in the paper): products of L2-normalised 128-d features are ~1e-3, too small for the MLP
    to learn from at our scale (CORP_f's order loss stayed at exactly 2 ln 2 for 200 steps without
    it). It keeps the parts' defining properties: ``LN(s(y, x)) = LN(s(x, y))`` and
    ``LN(-a) = -LN(a)``."""
    return F.layer_norm(r, r.shape[-1:])


def relation_mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers (ReLU between): the "MLP of configurable depth" after attention."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


class MixedAttention(nn.Module):
    """Multi-head attention relation (CORP eq. 1-2): ``U_h, V_h`` are ``d/h x d``."""

    def __init__(self, dim: int, heads: int = 128, hidden: int = 256, layers: int = 2, num_outputs: int = 3) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"feature dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.U = nn.Linear(dim, dim, bias=False)
        self.V = nn.Linear(dim, dim, bias=False)
        self.mlp = relation_mlp(heads, hidden, num_outputs, layers)

    def relation(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        u = self.U(zi).view(*zi.shape[:-1], self.heads, -1)
        v = self.V(zj).view(*zj.shape[:-1], self.heads, -1)
        return (u * v).sum(-1)

    def forward(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., num_outputs)`` for the pair."""
        return self.mlp(standardise(self.relation(zi, zj)))


class DecouplingAttention(nn.Module):
    """Decoupling attention (CORP eq. 8 without the sum): symmetric G-part, antisymmetric P/Q-part."""

    def __init__(self, dim: int, n: int = 128, l: int = 128, hidden: int = 256, layers: int = 2) -> None:  # noqa: E741
        super().__init__()
        self.G = nn.Linear(dim, n, bias=False)
        self.P = nn.Linear(dim, l, bias=False)
        self.Q = nn.Linear(dim, l, bias=False)
        self.same_mlp = relation_mlp(n, hidden, 1, layers)
        self.order_mlp = relation_mlp(l, hidden, 1, layers)

    def symmetric(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """``G z_i * G z_j``: s(x, y) = s(y, x)."""
        return self.G(zi) * self.G(zj)

    def antisymmetric(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """``P z_i * Q z_j - Q z_i * P z_j``: a(x, y) = -a(y, x)."""
        return self.P(zi) * self.Q(zj) - self.Q(zi) * self.P(zj)

    def same_logit(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """Logit of "from the same video" (not P1)."""
        return self.same_mlp(standardise(self.symmetric(zi, zj))).squeeze(-1)

    def order_logit(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """Logit of "z_i precedes z_j" given the same video (P2 | not P1)."""
        return self.order_mlp(standardise(self.antisymmetric(zi, zj))).squeeze(-1)

    def forward(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """3-way log-probabilities ``[P1, P2, P3]`` (eq. 6's factorisation), usable as logits."""
        same, order = self.same_logit(zi, zj), self.order_logit(zi, zj)
        return torch.stack([F.logsigmoid(-same), F.logsigmoid(same) + F.logsigmoid(order),
                            F.logsigmoid(same) + F.logsigmoid(-order)], -1)
