"""The key queue (MoCo memory): a FIFO ring of normalised keys, stored as buffers so that it is
saved in checkpoints and restored exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.modules.distributed import all_gather_nograd


class KeyQueue(nn.Module):
    """``size`` keys of dimension ``dim``. ``enqueue`` writes the keys gathered from every rank
    (when ``gather``) at the pointer, wrapping around the end; the oldest keys are overwritten.
    The initial contents are random unit vectors from a fixed seed, identical on every rank."""

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.compiler.disable
    def snapshot(self) -> torch.Tensor:
        """A copy of the keys for this step's loss: the queue is updated in place before the
        backward pass, which needs the keys the loss saw (as MoCo's ``queue.clone().detach()``).
        Made outside compiled graphs, which could otherwise keep the buffer itself for backward."""
        return self.keys.detach().clone()

    def filled_mask(self) -> torch.Tensor:
        """``(size,)`` bool: the slots written so far (all of them once the ring has wrapped)."""
        return torch.arange(self.size, device=self.keys.device) < self.filled

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Writes ``keys`` (with every rank's, when ``gather``) at the pointer. The slots are
        indexed on the keys' device: the pointer is never read on the host."""
        keys = all_gather_nograd(keys.detach(), gather).to(self.keys.dtype)
        n = keys.shape[0]
        if n > self.size:
            keys, n = keys[-self.size:], self.size
        idx = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[idx] = keys
        self.ptr.add_(n).remainder_(self.size)
        self.filled.add_(n).clamp_(max=self.size)
