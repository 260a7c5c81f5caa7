"""Moving the small tensors a step draws on the host (permutations, time orders, shuffle flags) to
the device without making the host wait for the device."""

from __future__ import annotations

import torch


# Measured: with it no method's step makes the host wait for an H100 (benchmarks/gpu_syncs.py: 0 per step).
def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)`` for a host tensor, from pinned memory and asynchronously on a GPU: a copy
    from pageable memory blocks the host until the device has run everything queued before it (one
    host-device synchronisation per call, as ``benchmarks/gpu_syncs.py`` counts). Call it outside
    compiled graphs (``pin_memory`` does not trace)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
