"""Classification and retrieval metrics on score matrices (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(1).float().mean())


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[true, predicted]`` counts."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((labels.long(), pred.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    return cm


def per_class_accuracy(cm: torch.Tensor) -> list[float | None]:
    totals = cm.sum(1)
    return [float(cm[i, i] / totals[i]) if totals[i] else None for i in range(len(cm))]


def classification_report(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    pred = scores.argmax(1)
    cm = confusion_matrix(pred, labels, num_classes)
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
            "per_class": per_class_accuracy(cm), "confusion": cm.tolist()}


def direction_given_pair(cm: torch.Tensor | list, pairs: list[tuple[int, int]]) -> float | None:
    """Of the videos of ``pairs`` (reversal twins ``(a, b)``) classified into their own pair, the
    share given the right twin: ``cm[a][a] + cm[b][b]`` over that plus ``cm[a][b] + cm[b][a]``
    (``None`` if none was). Chance is 0.5 whatever the pair accuracy."""
    cm = torch.as_tensor(cm)
    right = sum(int(cm[a, a] + cm[b, b]) for a, b in pairs)
    twin = sum(int(cm[a, b] + cm[b, a]) for a, b in pairs)
    return right / (right + twin) if right + twin else None


def recall_at_k(
    query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10, 20, 50),
) -> tuple[dict[str, float], torch.Tensor]:
    """R@k: the fraction of queries with at least one gallery item of their class among the ``k``
    nearest by cosine similarity. Returns the metrics and the top-``max(ks)`` gallery indices."""
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    top = sim.topk(min(max(ks), gallery.shape[0]), dim=1).indices
    hits = gallery_labels[top] == query_labels[:, None]
    return {f"R@{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}, top
