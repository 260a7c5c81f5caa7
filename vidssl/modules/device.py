"""Moving the small tensors a step draws on the host (permutations, time orders, shuffle flags) to
the device without making the host wait for the device, and building a step's small constant
tensors once."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)`` for a host tensor. To a GPU the copy is made from pinned memory and
    asynchronously: a copy from pageable memory blocks the host until the device has run everything
    queued before it (a host-device synchronisation per call, as ``benchmarks/gpu_syncs.py``
    counts). PyTorch's pinned-memory allocator keeps the source alive until the copy is done.
    Inside a compiled graph (which cannot trace ``pin_memory``) it is a plain copy."""
    if device.type != "cuda" or t.device.type != "cpu" or torch.compiler.is_compiling():
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def step_constant(build: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A small constant tensor a step needs, ``build(*settings)`` (hashable settings, the device
    among them unless it stays on the host): eagerly built once per setting and reused; in a
    compiled graph built in the graph, where it becomes a constant of the graph (dynamo does not
    trace a cache)."""
    cached = functools.lru_cache(maxsize=64)(build)

    @functools.wraps(build)
    def constant(*settings):
        return build(*settings) if torch.compiler.is_compiling() else cached(*settings)

    return constant
