"""MLFO's feature-level temporal modelling (Sec. 3.3): temporal transformations of feature maps,
the motion-excitation module of TEA (Li et al., CVPR 2020) and the side branches built on it.

Feature maps are ``(B, C, T, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.models.heads import mlp
from vidssl.modules.batch_norm import batch_norm_per_group, forward_per_group
from vidssl.modules.device import host_to_device

TEMPORAL_AUGS = ("reverse", "shuffle")


def time_order(name: str, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The order in which ``Aug_k`` (MLFO eq. 12) puts ``t`` time steps: ``reverse`` (last to first)
    or ``shuffle`` (a random order other than the original; with two steps that is the reversal)."""
    if name == "reverse":
        return torch.arange(t - 1, -1, -1)
    if name == "shuffle":
        if t < 2:
            raise ValueError("a shuffled time order needs at least 2 time steps")
        while True:
            perm = torch.randperm(t, generator=generator)
            if not torch.equal(perm, torch.arange(t)):
                return perm
    raise ValueError(f"unknown temporal augmentation {name!r}; choose from {TEMPORAL_AUGS}")


def order_indices(orders: list[list[torch.Tensor | None]], t: int, device: torch.device) -> torch.Tensor:
    """The time orders of ``G`` batches of clips with ``t`` steps (``orders[g]``: the batch's
    orders, the same number for every batch; ``None``: as it is) as one ``(G, per, t)`` index
    tensor on ``device`` for :meth:`MotionBranch.reordered`. Stacked on the host and copied
    without a host wait; called outside compiled graphs, which then see device indices only (a
    graph with host tensors is not replayed as a CUDA graph)."""
    stacked = torch.stack([torch.stack([torch.arange(t) if o is None else o for o in batch]) for batch in orders])
    return host_to_device(stacked, device)


def temporal_augment(x: torch.Tensor, name: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Aug_k(x)`` of MLFO eq. 12 (and of the input-level baseline) on ``(B, C, T, H, W)``; one
    order for the whole batch."""
    return x[:, :, time_order(name, x.shape[2], generator).to(x.device)]


def pointwise(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 ``Conv3d`` without bias applied to ``(B, C, T, H, W)`` as one matrix product over the
    channels: the same values, about a third of the CPU time of the convolution and its backward."""
    return F.linear(x.movedim(1, -1), conv.weight.flatten(1)).movedim(-1, 1)


def tap_windows(kernel: int, padding: int, size: int, device: torch.device) -> torch.Tensor:
    """``(kernel, size)`` 0/1: which input positions tap ``d`` of a stride-1 convolution with zero
    ``padding`` reads over all its output positions (input ``o + d - padding`` for output ``o``)."""
    out = size + 2 * padding - kernel + 1
    read = torch.arange(size, device=device) - torch.arange(kernel, device=device)[:, None] + padding
    return ((read >= 0) & (read < out)).float()


def pooled_depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The spatial mean of ``conv(x)`` for a channel-wise ``Conv2d`` (stride 1, zero padding, no
    bias) on ``(..., C, H, W)`` maps, ``(..., C)``, without the convolved maps: the mean is linear,
    so it is the kernel applied to the sums of ``x`` over the window each tap reads,
    ``sum_{a,b} w[c, a, b] (R x C^T)[c, a, b] / (H_out W_out)`` with ``R``, ``C`` the taps' row and
    column windows (:func:`tap_windows`). Leading dimensions are free (time steps need no
    reshaping into the batch)."""
    supported = (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
                 and not isinstance(conv.padding, str) and conv.bias is None and conv.groups == conv.in_channels)
    if not supported:
        raise ValueError(f"pooled_depthwise_conv needs a channel-wise, stride-1, zero-padded Conv2d "
                         f"without bias, got {conv}")
    (kh, kw), (ph, pw), (h, w) = conv.kernel_size, conv.padding, x.shape[-2:]
    rows, cols = tap_windows(kh, ph, h, x.device), tap_windows(kw, pw, w, x.device)
    sums = rows.to(x.dtype) @ x @ cols.to(x.dtype).T  # (..., C, kh, kw)
    outputs = (h + 2 * ph - kh + 1) * (w + 2 * pw - kw + 1)
    return (sums * conv.weight[:, 0]).sum((-2, -1)) / outputs


class MotionExcitation(nn.Module):
    """TEA's motion excitation: channels squeezed by ``reduction``; the feature-level motion
    ``M(t) = conv(X_r(t+1)) - X_r(t)`` (channel-wise 3x3 conv, zero for the last step), spatially
    pooled, expanded back, and used as an attention ``A = sigmoid(M) - 1/2``:
    ``out = X + X * A``. Its output depends on the order of time steps, which pooling alone does not.

    The squeeze and expand layers are 1x1x1 convolutions (``squeeze.0``, ``expand.0``), computed as
    matrix products (:func:`pointwise`)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        r = max(channels // reduction, 1)
        self.squeeze = nn.Sequential(nn.Conv3d(channels, r, 1, bias=False), nn.BatchNorm3d(r))
        self.transform = nn.Conv2d(r, r, 3, padding=1, groups=r, bias=False)
        self.expand = nn.Sequential(nn.Conv3d(r, channels, 1, bias=False), nn.BatchNorm3d(channels))

    def squeezed(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``X_r``: ``(B, C, T, H, W) -> (B, r, T, H, W)``; ``groups`` batches stacked in ``x``, each
        its own BatchNorm batch (:func:`forward_per_group`)."""
        return batch_norm_per_group(self.squeeze[1], pointwise(self.squeeze[0], x), groups)

    def step_terms(self, squeezed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of the pooled motion at every time step, ``(B, r, T)`` each: the spatial
        means of ``conv(X_r(t))`` and of ``X_r(t)``. The spatial mean is linear, so the pooled
        ``M(t)`` is the first at ``t + 1`` less the second at ``t`` (:meth:`motion_from_terms`);
        and the convolution sees one step at a time, so a clip in another time order has the same
        terms in that order: they are computed once per clip, whatever the orders."""
        by_step = squeezed.transpose(1, 2)  # (B, T, r, H, W): a view
        return pooled_depthwise_conv(self.transform, by_step).transpose(1, 2), squeezed.mean((3, 4))

    @staticmethod
    def motion_from_terms(convolved: torch.Tensor, squeezed: torch.Tensor) -> torch.Tensor:
        """``M`` spatially pooled, ``(B, r, T)``, from the terms of :meth:`step_terms` (in the time
        order wanted): ``conv(X_r(t + 1)) - X_r(t)``, zero at the last step."""
        return F.pad(convolved[..., 1:] - squeezed[..., :-1], (0, 1))

    def motion(self, squeezed: torch.Tensor) -> torch.Tensor:
        """``M`` spatially pooled, ``(B, r, T)``, from ``X_r``."""
        return self.motion_from_terms(*self.step_terms(squeezed))

    def attention(self, motion: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``A`` ``(B, C, T)`` from the pooled motion ``(B, r, T)`` of ``groups`` stacked batches of
        clips (the expand's BatchNorm normalises each batch on its own)."""
        expanded = pointwise(self.expand[0], motion[..., None, None])
        return torch.sigmoid(batch_norm_per_group(self.expand[1], expanded, groups)).flatten(2) - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.attention(self.motion(self.squeezed(x)))[..., None, None]


# Measured: the motion convolution run once per clip for all its time orders (reordered) cut MLFO's
# extra CPU time per laptop step 166 -> 77 ms, its overhead 1.23x -> 1.17x (docs/benchmarks.md).
class MotionBranch(nn.Module):
    """A side branch of eq. 11: ME (or the identity when ``excitation`` is False), spatio-temporal
    average pooling, a two-layer MLP, L2 normalisation."""

    def __init__(self, channels: int, hidden: int, dim: int, excitation: bool = True, reduction: int = 16) -> None:
        super().__init__()
        self.excite = MotionExcitation(channels, reduction) if excitation else None
        self.head = mlp([channels, hidden, dim], batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, dim)``."""
        return self.reordered(x, torch.arange(x.shape[2], device=x.device)[None, None])[0, :, 0]

    def reordered(self, x: torch.Tensor, times: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """The branch applied to each of ``G`` clips' maps stacked in ``x`` (``G`` batches of ``B``
        maps), in each of the time orders ``times[g]`` of batch ``g`` (``(G, per, T)`` indices on
        ``x``'s device, :func:`order_indices`), every (batch, order) its own call of the branch:
        ``(G, B, per, dim)``. ``steps``: ``x.mean((3, 4))`` where the caller has it already.

        Computed in one pass without the excited or reordered full maps, with the same result: ``A``
        is constant over space, so pooling ``X + X * A`` is ``mean_t(x_t * (1 + A_t))`` with ``x_t``
        the spatial mean of step ``t``; the squeeze (a 1x1x1 convolution and BatchNorm over batch,
        time and space) commutes with reordering time, so it runs once per batch for all orders (its
        BN running statistics, unused by the method, are updated once per batch rather than once per
        order); and so do the channel-wise motion convolution and the spatial mean after it
        (:meth:`MotionExcitation.step_terms`), so they run once per clip and only their pooled
        ``(r, T)`` terms are put in each order. The expand's and the head's BatchNorms normalise
        each (batch, order) on its own (:func:`forward_per_group`)."""
        groups, per, _ = times.shape
        b = len(x) // groups
        if steps is None:
            steps = x.mean((3, 4))  # (G * B, C, T)
        if self.excite is None:
            pooled = steps.mean(-1).unflatten(0, (groups, 1, b)).expand(-1, per, -1, -1).flatten(0, 2)
        else:
            convolved, squeezed = self.excite.step_terms(self.excite.squeezed(x, groups))  # (G * B, r, T) each
            # row (g, o, i) of the reordered batches is clip i of batch g at time steps times[g, o]
            batch_start = torch.arange(groups, device=x.device)[:, None, None] * b
            rows = (batch_start + torch.arange(b, device=x.device)).expand(-1, per, -1).reshape(-1, 1)
            row_times = times.flatten(0, 1).repeat_interleave(b, dim=0)  # (G * per * B, T)
            r = squeezed.shape[1]
            # the three pooled terms put in every order at once: (G * per * B, C + 2 r, T)
            ordered = torch.cat([steps, convolved, squeezed], 1)[rows, :, row_times].transpose(1, 2)
            ordered_steps, ordered_terms = ordered.split([ordered.shape[1] - 2 * r, 2 * r], 1)
            motion = self.excite.motion_from_terms(*ordered_terms.chunk(2, 1))
            attention = self.excite.attention(motion, groups * per)
            pooled = (ordered_steps * (1 + attention)).mean(-1)
        embedded = F.normalize(forward_per_group(self.head, pooled, groups * per), dim=-1)
        return embedded.unflatten(0, (groups, per, b)).transpose(1, 2)


class StepHead(nn.Module):
    """Per-time-step embeddings for timestamp retrieval (eq. 13): spatial average pooling, a
    two-layer MLP applied to every step, L2 normalisation. ``(B, C, T, H, W) -> (B, T, dim)``."""

    def __init__(self, channels: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.head = mlp([channels, hidden, dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_steps(x.mean((3, 4)))

    def embed_steps(self, steps: torch.Tensor) -> torch.Tensor:
        """The embeddings of spatially pooled time steps ``(B, C, T) -> (B, T, dim)``."""
        return F.normalize(self.head(steps.transpose(1, 2)), dim=-1)
