"""The mean cross-entropy against class indices, shared by every classification-shaped loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-mean_n log softmax(logits[n])[target[n]]`` for logits ``(N, C)`` and class indices ``(N,)``.

    Eagerly ``F.cross_entropy``: its fused log-softmax and NLL kernels are about twice as fast on
    CPU as the form below. In a compiled graph the same value as ``logsumexp - the target's logit``:
    inductor fused ``F.cross_entropy``'s mean with its count of valid labels into a kernel Triton
    failed to compile (384 rows, torch 2.11, H100; docs/benchmarks.md), and fuses this form."""
    if torch.compiler.is_compiling():
        return (torch.logsumexp(logits, dim=1) - logits.gather(1, target[:, None])[:, 0]).mean()
    return F.cross_entropy(logits, target)
