"""Contrastive losses (InfoNCE and SeCo's variants)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def nce_from_scores(positive: torch.Tensor, negative_logsumexp: torch.Tensor) -> torch.Tensor:
    """The mean of ``-log(e^s / (e^s + e^S))`` over scaled positive scores ``s`` and the
    log-sum-exp ``S`` of their negatives' scaled scores (broadcast against each other): each term is
    ``softplus(S - s)``. A query's negatives enter once however many positives share them."""
    return F.softplus(negative_logsumexp - positive).mean()


def seco_inter_loss(query: torch.Tensor, positives: torch.Tensor, queue: torch.Tensor,
                    tau: float = 0.1) -> torch.Tensor:
    """SeCo's inter-frame instance discrimination (SeCo eq. 2):
    ``L_inter = 1/P sum_i L_NCE(q, k_i, K-)``, one ordinary InfoNCE per positive key sharing the
    queue ``K-`` as negatives; the other positives are *not* in the denominator (official code).

    ``query``: ``(N, D)``; ``positives``: ``(P, N, D)``; ``queue``: ``(M, D)``. The queue's
    log-sum-exp is computed once per query for its ``P`` terms (:func:`nce_from_scores`)."""
    q = query.float()
    positive = (positives.float() * q).sum(-1) / tau  # (P, N)
    negative = torch.logsumexp(q @ queue.float().T / tau, dim=1)  # (N,)
    return nce_from_scores(positive, negative)


def seco_intra_loss(query: torch.Tensor, same_frame: torch.Tensor, other_frames: torch.Tensor,
                    tau: float = 0.1) -> torch.Tensor:
    """SeCo's intra-frame instance discrimination (SeCo eq. 3): the key of the same frame is the
    positive, keys of other frames of the same video the negatives; no queue. As the official code,
    the mean of one 2-way softmax per other frame: ``[q·k_same, q·k_other] / tau``, whose
    log-sum-exp of negatives is the single negative's score.

    ``query``, ``same_frame``: ``(N, D)``; ``other_frames``: ``(P, N, D)``."""
    q = query.float()
    positive = (same_frame.float() * q).sum(-1) / tau  # (N,)
    negative = (other_frames.float() * q).sum(-1) / tau  # (P, N)
    return nce_from_scores(positive, negative)
