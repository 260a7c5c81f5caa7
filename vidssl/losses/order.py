"""Temporal-order classification losses."""

from __future__ import annotations

import torch

from vidssl.losses.cross_entropy import cross_entropy


def order_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of order-classifier logits ``(N, C)`` against order labels ``(N,)``
    (SeCo eq. 4 with C = 2; VCLR's 4-way and CORP's 2/3-way order tasks), in float32."""
    return cross_entropy(logits.float(), labels.long())
