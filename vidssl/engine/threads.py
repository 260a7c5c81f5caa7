"""How many intra-op threads the training process uses next to its loader workers.

PyTorch's default is one thread per core, while each DataLoader worker (one thread, see
``seed_worker``) also wants a core. On a small machine the two then oversubscribe the cores, and
OpenMP threads that spin waiting for each other while a worker holds their core slow the step far
more than the lost thread would: on 2 cores with 2 workers, SeCo trains at 13 steps/s with one
thread against 7 with two. So by default (``train.threads: 0``) the process gets the cores its
workers leave, at least one. Where the model, not the loader, needs the cores (the clip methods'
laptop configs: a light loader beside a 3D network), ``train.threads: -1`` keeps PyTorch's
setting; docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def training_threads(configured: int, num_workers: int) -> int | None:
    """The intra-op threads for a run (``train.threads``): ``configured`` when positive; ``None``
    (PyTorch's own setting: ``OMP_NUM_THREADS``, else one per core) when it is -1, or when it is 0
    (automatic) and ``OMP_NUM_THREADS`` is set (as torchrun does for several processes per node);
    otherwise, for 0, this process's share of the cores (``LOCAL_WORLD_SIZE`` processes per node)
    less its loader workers, at least one."""
    if configured > 0:
        return configured
    if configured < 0 or os.environ.get("OMP_NUM_THREADS"):
        return None
    per_process = available_cores() // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(per_process - num_workers, 1)


@contextlib.contextmanager
def intra_op_threads(configured: int, num_workers: int) -> Iterator[int]:
    """Runs the body with :func:`training_threads` threads and restores the previous number after
    (``train()`` may be called from a notebook or a test). Yields the number in use."""
    previous = torch.get_num_threads()
    threads = training_threads(configured, num_workers)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
