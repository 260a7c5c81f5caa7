"""Linear evaluation of frozen features: a linear SVM (SeCo/VCLR protocol) and a linear-layer
probe (CORP/MLFO protocol)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidssl.eval.metrics import classification_report

NORMALIZATIONS = ("l2", "standard", "none")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def normalize_features(train: torch.Tensor, test: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``l2``: unit rows; ``standard``: z-score with the train statistics; ``none``."""
    if how == "l2":
        return F.normalize(train, dim=1), F.normalize(test, dim=1)
    if how == "standard":
        mu, sd = train.mean(0), train.std(0).clamp_min(1e-6)
        return (train - mu) / sd, (test - mu) / sd
    if how == "none":
        return train, test
    raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {how!r}")


@dataclass
class SVMResult:
    report: dict
    C: float
    cv_scores: dict[str, float]


def linear_svm(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
               num_classes: int, C: float | None = None, normalization: str = "l2", folds: int = 3,
               seed: int = 0) -> SVMResult:
    """liblinear L2-regularised L2-loss SVC, one-vs-rest. ``C=None`` picks C from ``C_GRID`` by
    stratified k-fold cross-validation on the train split only (ties: the smaller C)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    xtr, xte = normalize_features(train_x.float(), test_x.float(), normalization)
    xtr_np, ytr_np = xtr.numpy().astype(np.float64), train_y.numpy()
    cv_scores: dict[str, float] = {}
    if C is None:
        counts = np.bincount(ytr_np)
        k = int(min(folds, counts[counts > 0].min()))
        if k >= 2:
            cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            for c in C_GRID:
                svm = LinearSVC(C=c, max_iter=20000, random_state=seed)
                cv_scores[str(c)] = float(cross_val_score(svm, xtr_np, ytr_np, cv=cv).mean())
            C = float(max(C_GRID, key=lambda c: (cv_scores[str(c)], -c)))
        else:
            C = 1.0
    svm = LinearSVC(C=C, max_iter=20000, random_state=seed).fit(xtr_np, ytr_np)
    scores = torch.full((len(xte), num_classes), float("-inf"))
    decision = torch.from_numpy(svm.decision_function(xte.numpy().astype(np.float64))).float()
    if decision.ndim == 1:  # binary problem
        decision = torch.stack([-decision, decision], 1)
    scores[:, torch.from_numpy(svm.classes_).long()] = decision
    return SVMResult(classification_report(scores, test_y, num_classes), float(C), cv_scores)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, normalization: str = "standard", epochs: int = 300, lr: float = 0.05,
                 weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """A linear layer trained with full-batch SGD (momentum 0.9, cosine lr) and cross-entropy on
    frozen, normalised features (CORP: z-score standardisation)."""
    xtr, xte = normalize_features(train_x.float(), test_x.float(), normalization)
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(layer(xtr), train_y).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return classification_report(layer(xte), test_y, num_classes)
