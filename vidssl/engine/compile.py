"""``torch.compile`` for a training step: one static shape, and the step boundary that CUDA graphs need."""

from __future__ import annotations

from collections.abc import Callable

import torch

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes that record CUDA graphs


def compile_mode(setting: bool | str) -> str | None:
    """``train.compile`` as torch.compile's mode (``True``: its default), or ``None`` for eager."""
    return "default" if setting is True else (setting or None)


def compile_step(fn: Callable, mode: str = "default") -> Callable:
    """``fn`` compiled for static shapes (a run's loader drops the last part batch: one shape,
    compiled once; MLFO recompiles when a stage begins). With a CUDA-graph mode each compiled
    graph's kernels are recorded once and replayed by one launch per graph on a GPU; ignored on a
    CPU."""
    return torch.compile(fn, dynamic=False, mode=mode)


def begin_step(mode: str | None) -> None:
    """Call before each forward pass of a step compiled in ``mode`` (``None``: eager): with
    CUDA graphs the outputs of the previous pass (already reduced into the logged totals) may then
    be overwritten by the next replay, whose memory they share."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()
