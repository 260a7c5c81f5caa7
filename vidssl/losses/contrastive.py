"""Contrastive losses (InfoNCE and SeCo's variants)."""

from __future__ import annotations

import torch

from vidssl.losses.cross_entropy import cross_entropy


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             tau: float = 0.1) -> torch.Tensor:
    """InfoNCE with one explicit positive per query (SeCo eq. 1, MoCo):

    ``L = -log exp(q·k+ / tau) / (exp(q·k+ / tau) + sum_n exp(q·k_n / tau))``

    ``query``, ``positive``: ``(N, D)``; ``negatives``: ``(M, D)`` shared by every query (a queue,
    or the other samples of the batch) or ``(N, M, D)`` per query. Computed in float32.
    """
    q, k = query.float(), positive.float()
    pos = (q * k).sum(-1, keepdim=True)
    neg = q @ negatives.float().T if negatives.ndim == 2 else torch.bmm(negatives.float(), q[:, :, None])[..., 0]
    logits = torch.cat([pos, neg], dim=1) / tau
    return cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def seco_inter_loss(query: torch.Tensor, positives: list[torch.Tensor] | tuple[torch.Tensor, ...],
                    queue: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """SeCo's inter-frame instance discrimination (SeCo eq. 2):
    ``L_inter = 1/P sum_i L_NCE(q, k_i, K-)``, one ordinary InfoNCE per positive key sharing the
    queue ``K-`` as negatives; the other positives are *not* in the denominator (official code).
    The ``P`` terms are computed as one InfoNCE over ``P·N`` rows (equal sizes: the same mean)."""
    return info_nce(query.repeat(len(positives), 1), torch.cat(list(positives)), queue, tau)


def seco_intra_loss(query: torch.Tensor, same_frame: torch.Tensor,
                    other_frames: list[torch.Tensor] | tuple[torch.Tensor, ...],
                    tau: float = 0.1) -> torch.Tensor:
    """SeCo's intra-frame instance discrimination (SeCo eq. 3): the key of the same frame is the
    positive, keys of other frames of the same video the negatives; no queue. As the official code,
    the mean of one 2-way softmax per other frame: ``[q·k_same, q·k_other] / tau``, computed as one
    InfoNCE over ``P·N`` rows."""
    p = len(other_frames)
    return info_nce(query.repeat(p, 1), same_frame.repeat(p, 1), torch.cat(list(other_frames))[:, None, :], tau)
