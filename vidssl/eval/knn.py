"""Weighted k-nearest-neighbour classification on frozen features (Wu et al., CVPR 2018, Sec. 3.4):
the ``k`` most cosine-similar gallery items vote for their labels with weight ``exp(s / T)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_scores(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
               k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Class votes ``(Q, num_classes)`` of ``queries`` ``(Q, D)`` from ``gallery`` ``(N, D)``:
    ``sum over the k nearest j of exp(cos(q, g_j) / T) [y_j = c]``."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    top, index = sim.topk(min(k, len(gallery)), dim=1)
    return torch.zeros(len(queries), num_classes).scatter_add_(1, gallery_labels[index], (top / temperature).exp())


def knn_predict(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Predicted labels ``(Q,)``: the class with the most votes (:func:`knn_scores`)."""
    return knn_scores(gallery, gallery_labels, queries, num_classes, k, temperature).argmax(1)
