"""MLFO's losses (Qian et al., ICCV 2021), as pure functions of normalised embeddings.

Notation: ``z1``, ``z2`` are the two clips' embeddings of this rank's ``n`` videos; ``z1_all``,
``z2_all`` the same over the gathered batch (``N`` videos, this rank's rows at ``self_index``).
``h(u, v) = exp(u·v / tau)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRAPH_TARGETS = ("onehot", "instance", "semantic", "combined")


def soft_cross_entropy(targets: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """``-sum_j targets(i, j) log_probs(i, j)``, mean over rows ``i``."""
    return -(targets * log_probs).sum(-1).mean()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iterations: int = 3,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sinkhorn-Knopp (Cuturi 2013; as SwAV) on prototype scores ``(N, K)``: soft codes ``(N, K)``
    for an equipartition of the N samples over the K prototypes (MLFO Sec. 3.1, the targets ``s`` of
    eq. 4). ``Q = exp(scores / eps)``, then alternately each prototype's mass set to ``1/K`` and
    each sample's to ``1/N``. Returned rows sum to 1 exactly; prototype totals approach ``N/K`` as
    the iterations grow (3 in the paper). Float32, stabilised by the maximum score. Leading
    dimensions ``(..., N, K)`` are independent problems solved together (both views' codes).

    ``valid`` ``(N,)`` (bool): only these samples take part (``N`` is their number, a tensor: no
    host read) and the others get all-zero codes; the codes of the valid rows are those of the
    problem on the valid rows alone. A problem of fixed size whose membership is data (a partly
    filled score queue) keeps one shape for compiled graphs."""
    s = scores.float() / eps
    if valid is not None:
        s = s.masked_fill(~valid[:, None], float("-inf"))  # exp(-inf) = 0: no mass
    q = torch.exp(s - s.amax((-2, -1), keepdim=True)).transpose(-2, -1)  # (..., K, N)
    q /= q.sum((-2, -1), keepdim=True)
    k = q.shape[-2]
    n = q.shape[-1] if valid is None else valid.sum()
    for _ in range(iterations):
        q /= q.sum(dim=-1, keepdim=True) * k
        # an excluded sample's column is all zero: 0 / tiny keeps it zero
        q /= q.sum(dim=-2, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny) * n
    return (q * n).transpose(-2, -1)


def swapped_prediction_loss(scores1: torch.Tensor, scores2: torch.Tensor, codes1: torch.Tensor,
                            codes2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """L_sem (MLFO eq. 4): each view's codes are the targets of the other view's prototype
    distribution ``p = softmax(scores / temperature)``; both directions summed, mean over samples."""
    log_p1 = F.log_softmax(scores1.float() / temperature, dim=1)
    log_p2 = F.log_softmax(scores2.float() / temperature, dim=1)
    return soft_cross_entropy(codes1, log_p2) + soft_cross_entropy(codes2, log_p1)


def pair_log_probs(anchors: torch.Tensor, positives: torch.Tensor, z1_all: torch.Tensor, z2_all: torch.Tensor,
                   self_index: torch.Tensor, tau: float) -> torch.Tensor:
    """The similarity distribution over videos of eq. 2-3 and 10, as log-probabilities ``(n, N)``:
    for video ``j != i`` the mass ``h(a_i, z_j^1) + h(a_i, z_j^2)`` (both clips of the video), for the
    anchor's own video ``h(z_i^1, z_i^2)``; normalised over ``j``. ``anchors`` are one view of this
    rank's videos, ``positives`` the other view (the own-video term is symmetric in the views)."""
    a = anchors.float()
    logits = torch.logaddexp(a @ z1_all.float().T / tau, a @ z2_all.float().T / tau)
    own = (anchors.float() * positives.float()).sum(-1) / tau
    rows = torch.arange(len(a), device=a.device)
    logits = logits.index_put((rows, self_index), own)
    return F.log_softmax(logits, dim=1)


def _both_views_log_probs(z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor, z2_all: torch.Tensor,
                          self_index: torch.Tensor, tau: float) -> torch.Tensor:
    """:func:`pair_log_probs` with clip 1 as the anchors (rows ``0..n-1``) and with clip 2 (rows
    ``n..2n-1``), in one call."""
    return pair_log_probs(torch.cat([z1, z2]), torch.cat([z2, z1]), z1_all, z2_all, self_index.repeat(2), tau)


def instance_loss(z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor, z2_all: torch.Tensor,
                  self_index: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """L_ins (MLFO eq. 2-3): both clips of a video are positives, both clips of every other video
    in the (gathered) batch negatives; both views as anchors. Mean over videos of the sum over the
    two views (the paper sums over videos; the mean keeps the scale independent of the batch)."""
    log_probs = _both_views_log_probs(z1, z2, z1_all, z2_all, self_index, tau)  # (2 n, N)
    return -2 * log_probs.gather(1, self_index.repeat(2)[:, None]).mean()


@torch.no_grad()
def graph_targets(z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor, z2_all: torch.Tensor,
                  codes: torch.Tensor, codes_all: torch.Tensor, self_index: torch.Tensor, kind: str = "combined",
                  tau: float = 0.07, eta: float = 0.05) -> torch.Tensor:
    """Soft targets ``E (n, N)`` for L_mul (MLFO eq. 6-9), rows summing to 1, no gradient.

    - W (eq. 8): ``h(z_i^1, z_i^2)`` on the diagonal, ``1/4 sum_{m,n} h(z_i^m, z_j^n)`` elsewhere.
    - E_ins (eq. 6): W where ``W(i, j) / sum_j W(i, j) >= eta``, else 0; the diagonal always kept.
    - E_sem (eq. 7): 1 where the videos' summed codes ``s* = s^1 + s^2`` share their argmax.
    - ``combined`` (eq. 9): ``E_ins * E_sem``, row-normalised. The ablations of Table 2:
      ``onehot`` (the identity: InfoNCE's labels), ``instance`` (E_ins), ``semantic`` (E_sem),
      each row-normalised.

    ``codes`` / ``codes_all``: ``s*`` of this rank's / all videos.
    """
    if kind not in GRAPH_TARGETS:
        raise ValueError(f"graph target kind must be one of {GRAPH_TARGETS}, got {kind!r}")
    n, big_n = len(z1), len(z1_all)
    own = torch.zeros(n, big_n, dtype=torch.bool, device=z1.device)
    own.scatter_(1, self_index[:, None], True)
    if kind == "onehot":
        return own.float()
    pairs = torch.stack([a.float() @ b.float().T for a in (z1, z2) for b in (z1_all, z2_all)]) / tau
    log_w = torch.logsumexp(pairs, dim=0) - torch.log(torch.tensor(4.0))
    log_w = torch.where(own, ((z1.float() * z2.float()).sum(-1) / tau)[:, None], log_w)
    ratio = torch.softmax(log_w, dim=1)  # W(i, j) / sum_j W(i, j); proportional to W within a row
    e_ins = torch.where((ratio >= eta) | own, ratio, torch.zeros_like(ratio))
    e_sem = (codes.argmax(1)[:, None] == codes_all.argmax(1)[None, :]).float()
    e = {"instance": e_ins, "semantic": e_sem, "combined": e_ins * e_sem}[kind]
    return e / e.sum(dim=1, keepdim=True)


def graph_loss(targets: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor,
               z2_all: torch.Tensor, self_index: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """L_mul at one level (MLFO eq. 10): soft cross-entropy of the level's similarity distribution
    (:func:`pair_log_probs`) against the graph targets, summed over the two views, mean over videos.
    With one-hot targets this is exactly :func:`instance_loss`."""
    return 2 * soft_cross_entropy(targets.repeat(2, 1), _both_views_log_probs(z1, z2, z1_all, z2_all, self_index, tau))


def timestamp_retrieval_loss(short: torch.Tensor, long: torch.Tensor, offset: int, tau: float = 0.07) -> torch.Tensor:
    """L_ret (MLFO eq. 13), symmetric: ``short (B, S, D)`` are the time steps of a short clip,
    ``long (B, L, D)`` those of the long clip, where short step ``k`` covers the same time as long
    step ``offset + k``. Each short step retrieves its long step among all ``L`` (eq. 13), and each
    covered long step retrieves its short step among the ``S``; the mean of the two
    cross-entropies, over videos and steps. Embeddings normalised."""
    b, s, _ = short.shape
    if offset < 0 or offset + s > long.shape[1]:
        raise ValueError(f"short steps {offset}..{offset + s - 1} fall outside the {long.shape[1]} long steps")
    logits = short.float() @ long.float().transpose(1, 2) / tau  # (B, S, L)
    steps = torch.arange(s, device=short.device).repeat(b)
    forward = F.cross_entropy(logits.reshape(b * s, -1), steps + offset)
    backward = F.cross_entropy(logits[:, :, offset:offset + s].transpose(1, 2).reshape(b * s, s), steps)
    return 0.5 * (forward + backward)


def graph_contrast(targets: torch.Tensor, q: torch.Tensor, k_all: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """L_mul at one level as the official code computes it (``graph_contrast``; DESIGN §3): one
    view's embeddings ``q (n, d)`` against the other view gathered over the batch ``k_all (N, d)``,
    ``-log softmax_j(q_i·k_j / tau) * E_ij`` averaged over all ``n x N`` entries, i.e. the paper's
    soft cross-entropy (eq. 10) with one view's similarities, divided by the batch size."""
    log_p = F.log_softmax(q.float() @ k_all.float().T / tau, dim=1)
    return -(targets * log_p).mean()


def motion_contrast(anchor: torch.Tensor, positive: torch.Tensor, transformed: torch.Tensor,
                    others: torch.Tensor, own: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """L_aug at one level as the official code computes it (``motion_contrast``; eq. 11-12): the
    positive is the other clip of the anchor's video; the negatives are the time-transformed copies
    of the anchor ``transformed (n, A, d)`` and every clip of the other videos of the gathered
    batch, ``others (M, d)`` with this rank's own videos' rows marked in ``own (n, M)`` (left out).
    Mean over anchors."""
    a = anchor.float()
    pos = (a * positive.float()).sum(-1, keepdim=True)
    neg_own = torch.bmm(transformed.float(), a[:, :, None])[..., 0]
    neg_others = (a @ others.float().T).masked_fill(own, float("-inf"))
    logits = torch.cat([pos, neg_own, neg_others], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=a.device))
