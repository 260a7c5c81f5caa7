"""Collective helpers. Each takes ``distributed`` explicitly and is the identity when it is False
(or when no process group is initialised), so single-process code paths are the same code."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed(distributed: bool = True) -> bool:
    return distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def all_gather_nograd(x: torch.Tensor, distributed: bool = True) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), without gradient."""
    if not is_distributed(distributed):
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.batch = x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on this rank's rows
        start = dist.get_rank() * ctx.batch
        return grad[start:start + ctx.batch]


def all_gather_with_grad(x: torch.Tensor, distributed: bool = True) -> torch.Tensor:
    """Concatenate ``x`` from every rank; gradients flow back to each rank's own rows, summed
    over the ranks' losses (as if the global batch's loss were computed on one device)."""
    if not is_distributed(distributed):
        return x
    return _GatherWithGrad.apply(x)
