"""Several independent BatchNorm batches in one call.

A head applied to ``groups`` batches (say a clip in three time orders) normalises each batch with
its own statistics. Running it once per batch costs a few small kernels per layer and batch;
:func:`forward_per_group` runs it once on the batches stacked along dim 0, with every BatchNorm
normalising each group on its own (:func:`batch_norm_per_group`). The outputs, the gradients and
the running statistics are those of the calls one after another (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norm_per_group(bn: _BatchNorm, x: torch.Tensor, groups: int) -> torch.Tensor:
    """``torch.cat([bn(chunk) for chunk in x.chunk(groups)])`` in one BatchNorm kernel.

    In training (or without running statistics) each of the ``groups`` equal slices of dim 0 is
    normalised over its own samples: the groups are moved beside the channels, so that every
    (group, channel) pair is one channel of a single ``batch_norm`` call. The running statistics
    advance ``groups`` times with momentum ``m`` as the calls would, in closed form:
    ``r <- (1 - m)^G r + sum_g m (1 - m)^(G - 1 - g) s_g`` (``momentum=None``, the cumulative
    average, group by group). In eval mode with running statistics the groups share them, so this
    is ``bn(x)``."""
    if groups == 1 or not (bn.training or bn.running_mean is None):
        return bn(x)
    if x.shape[0] % groups:
        raise ValueError(f"batch_norm_per_group: {x.shape[0]} samples do not split into {groups} groups")
    channels = x.shape[1]
    # (G * n, C, ...) -> (n, G * C, ...): channel g * C + c is channel c of group g
    stacked = x.unflatten(0, (groups, -1)).transpose(0, 1).flatten(1, 2)
    weight = bn.weight.repeat(groups) if bn.affine else None
    bias = bn.bias.repeat(groups) if bn.affine else None
    if bn.track_running_stats:
        # momentum 1 leaves each group's batch mean and unbiased variance in the buffers
        means = torch.zeros(groups * channels, device=x.device, dtype=bn.running_mean.dtype)
        variances = torch.ones_like(means)
        out = F.batch_norm(stacked, means, variances, weight, bias, True, 1.0, bn.eps)
        _advance_running_stats(bn, means.view(groups, channels), variances.view(groups, channels))
    else:
        out = F.batch_norm(stacked, None, None, weight, bias, True, 0.0, bn.eps)
    return out.unflatten(1, (groups, channels)).transpose(0, 1).flatten(0, 1)


@torch.no_grad()
def _advance_running_stats(bn: _BatchNorm, means: torch.Tensor, variances: torch.Tensor) -> None:
    """``bn``'s running statistics after one update per group ``(G, C)``, in group order."""
    groups = means.shape[0]
    if bn.momentum is None:  # cumulative moving average: each update weighs 1 / (batches so far)
        for mean, var in zip(means, variances, strict=True):
            bn.num_batches_tracked.add_(1)
            factor = bn.num_batches_tracked.to(mean.dtype).reciprocal()  # a tensor: no host read
            bn.running_mean.lerp_(mean, factor)
            bn.running_var.lerp_(var, factor)
        return
    m = bn.momentum
    # m (1 - m)^(G - 1 - g): the weight of group g's statistics after G updates, (G, 1)
    weights = (m * (1 - m) ** torch.arange(groups - 1, -1, -1, dtype=means.dtype, device=means.device))[:, None]
    bn.running_mean.mul_((1 - m) ** groups).add_((weights * means).sum(0))
    bn.running_var.mul_((1 - m) ** groups).add_((weights * variances).sum(0))
    bn.num_batches_tracked.add_(groups)


# Measured: MLFO's operations per step 3,543 -> 2,079 with its heads grouped; on an H100, R3D-18 at
# 112 px, batch 16, its overhead 3.25x -> 1.71-1.84x (docs/benchmarks.md).
def forward_per_group(head: nn.Sequential, x: torch.Tensor, groups: int) -> torch.Tensor:
    """``head`` on ``groups`` equal batches stacked along dim 0, as
    ``torch.cat([head(chunk) for chunk in x.chunk(groups)])``: its BatchNorm layers normalise each
    group on its own; every other layer must treat samples independently."""
    for layer in head:
        x = batch_norm_per_group(layer, x, groups) if isinstance(layer, _BatchNorm) else layer(x)
    return x
