"""A method's loss: the sum of its named parts."""

from __future__ import annotations

import functools
import operator

import torch


def sum_parts(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_i parts[i]`` in the parts' order. Python's ``sum`` would start from ``0``: one more
    kernel and autograd node per step for the same value, bit for bit."""
    first, *rest = parts.values()
    return functools.reduce(operator.add, rest, first)
