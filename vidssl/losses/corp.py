"""CORP's losses (Hu et al., ICCV 2021) and NT-Xent (SimCLR), as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(anchors: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor, self_index: torch.Tensor,
            tau: float = 0.1) -> torch.Tensor:
    """NT-Xent (SimCLR; CORP eq. 5): each anchor ``anchors[n]`` (normalised) against every
    candidate but itself (``candidates[self_index[n]]``), the positive being
    ``candidates[positive[n]]``. With the whole (gathered) batch as candidates, that is the
    (2B-1)-way classification of the paper. Mean over anchors, float32."""
    logits = anchors.float() @ candidates.float().T / tau
    logits = logits.scatter(1, self_index[:, None], float("-inf"))  # (a scalar: no host-to-device copy)
    return F.cross_entropy(logits, positive)


def corp_f_order_loss(forward_logits: torch.Tensor, backward_logits: torch.Tensor) -> torch.Tensor:
    """CORP_f's 2-way order term (eq. 6): for each video, the head on (earlier, later) must say
    P2 (class 0) and on (later, earlier) P3 (class 1). Summed over the two directions, mean over
    videos. Logits ``(B, 2)``."""
    b = len(forward_logits)
    zeros = torch.zeros(b, dtype=torch.long, device=forward_logits.device)
    return F.cross_entropy(forward_logits.float(), zeros) + F.cross_entropy(backward_logits.float(), zeros + 1)


def corp_pair_labels(video: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ordered pairs ``(i, j)``, ``i != j``, of clips with video ids ``video`` ``(n,)`` and
    start frames ``start`` ``(..., n)`` (a batch of samples with the same video layout), with CORP_m's
    3-way labels ``(..., pairs)``: 0 different videos (P1), 1 ``i`` precedes ``j`` (P2), 2 ``j``
    precedes ``i`` (P3). Ties in start (only in videos too short for the sampler) count as P2."""
    n = len(video)
    # row-major over (i, j): each i with every other j in ascending order, built on the device with
    # fixed shapes (no boolean selection, which a compiled graph would break at)
    i = torch.arange(n, device=video.device).repeat_interleave(n - 1)
    k = torch.arange(n - 1, device=video.device).repeat(n)
    j = k + (k >= i).long()
    same = video[i] == video[j]
    labels = torch.where(same, torch.where(start[..., i] <= start[..., j], 1, 2), 0)
    return i, j, labels


def corp_m_loss(logits: torch.Tensor, labels: torch.Tensor,
                parts: tuple[str, ...] = ("contrast", "order")) -> torch.Tensor:
    """CORP_m's loss (Sec. 3.2): the 3-way cross-entropy summed over the clip pairs. ``logits``
    ``(pairs, 3)`` (or log-probabilities from the decoupled head). ``parts`` splits the 3-way task
    for the paper's ablation: ``contrast`` = different vs same video (P1 vs P2 ∪ P3), ``order`` =
    P2 vs P3 on same-video pairs; both together equal the full 3-way cross-entropy."""
    logp = F.log_softmax(logits.float(), dim=-1)
    same_video = labels > 0
    total = logits.new_zeros((), dtype=torch.float32)
    if "contrast" in parts:
        log_same = torch.logsumexp(logp[:, 1:], dim=-1)
        total = total - torch.where(same_video, log_same, logp[:, 0]).sum()
    if "order" in parts:  # masked rather than selected: no host-device synchronisation, no graph break
        cond = logp[:, 1:] - torch.logsumexp(logp[:, 1:], dim=-1, keepdim=True)  # P2 vs P3, given same video
        picked = cond.gather(1, (labels - 1).clamp(min=0)[:, None])[:, 0]
        total = total - torch.where(same_video, picked, 0.0).sum()
    return total


def corp_m_decoupled_loss(same_logits: torch.Tensor, order_logits: torch.Tensor, labels: torch.Tensor,
                          parts: tuple[str, ...] = ("contrast", "order")) -> torch.Tensor:
    """:func:`corp_m_loss` written on the decoupled head's two logits, so that each part touches
    only its own branch exactly: ``contrast`` = binary cross-entropy of the same-video logit,
    ``order`` = binary cross-entropy of the order logit on same-video pairs (P2 is the positive)."""
    same_video = labels > 0
    total = same_logits.new_zeros((), dtype=torch.float32)
    if "contrast" in parts:
        total = total + F.binary_cross_entropy_with_logits(same_logits.float(), same_video.float(), reduction="sum")
    if "order" in parts:  # masked rather than selected: no host-device synchronisation
        order = F.binary_cross_entropy_with_logits(order_logits.float(), (labels == 1).float(), reduction="none")
        total = total + (order * same_video).sum()
    return total
