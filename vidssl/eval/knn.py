"""Weighted k-nearest-neighbour classification on frozen features (Wu et al., CVPR 2018, Sec. 3.4):
the ``k`` most cosine-similar gallery items vote for their labels with weight ``exp(s / T)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Predicted labels ``(Q,)`` of ``queries`` ``(Q, D)`` from ``gallery`` ``(N, D)`` and its labels."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    top, index = sim.topk(min(k, len(gallery)), dim=1)
    votes = torch.zeros(len(queries), num_classes).scatter_add_(1, gallery_labels[index], (top / temperature).exp())
    return votes.argmax(1)
