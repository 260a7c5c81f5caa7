"""Moving the small tensors a step draws on the host (permutations, time orders, shuffle flags) to
the device without making the host wait for the device."""

from __future__ import annotations

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
