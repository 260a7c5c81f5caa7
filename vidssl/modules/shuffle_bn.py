"""Shuffle-BN (MoCo): the key encoder sees a shuffled batch so that BatchNorm statistics cannot
leak which query and key belong together.

Across ranks: the global batch is gathered, permuted with a permutation drawn on rank 0 and
broadcast, each rank encodes its slice, and the outputs are gathered and un-permuted. On one
process the same effect is emulated by permuting the batch and encoding it in ``splits``
independent chunks (each chunk has its own BN statistics, like one GPU's share).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from vidssl.modules.device import host_to_device
from vidssl.modules.distributed import all_gather_nograd, is_distributed


@torch.compiler.disable
def shuffle_permutation(batch: int, distributed: bool, generator: torch.Generator | None,
                        device: torch.device) -> torch.Tensor:
    """Shuffle-BN's permutation of the global batch (``batch`` rows per rank, times the ranks),
    drawn on the host from the step's ``generator`` and copied to ``device`` without a host wait;
    across ranks, rank 0's draw is broadcast to all. Outside compiled graphs: a method calls it at
    the top of its step, so that a compiled step breaks before its graph rather than inside it."""
    across_ranks = is_distributed(distributed)
    world = dist.get_world_size() if across_ranks else 1
    perm = host_to_device(torch.randperm(batch * world, generator=generator), device)
    if across_ranks:
        dist.broadcast(perm, src=0)
    return perm


@torch.no_grad()
def shuffle_bn_forward(encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, perm: torch.Tensor,
                       distributed: bool = True, splits: int = 1) -> torch.Tensor:
    """``encoder(x)`` computed on the batch shuffled by ``perm`` (:func:`shuffle_permutation`),
    returned in the original order."""
    if is_distributed(distributed):
        world, rank = dist.get_world_size(), dist.get_rank()
        x_all = all_gather_nograd(x)
        local = perm.view(world, -1)[rank]
        out_all = all_gather_nograd(encoder(x_all.index_select(0, local)))
        unshuffled = torch.empty_like(out_all)
        unshuffled[perm] = out_all
        return unshuffled.view(world, -1, *out_all.shape[1:])[rank]
    chunks = [encoder(c) for c in x.index_select(0, perm).chunk(max(splits, 1))]  # (4x cheaper than x[perm])
    out = torch.cat(chunks)
    unshuffled = torch.empty_like(out)
    unshuffled[perm] = out
    return unshuffled
