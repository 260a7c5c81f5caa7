"""OTB's one-pass evaluation (Wu, Lim and Yang, TPAMI 2015), as its toolkit computes it.

Success plot: the share of frames whose overlap (IoU) with the ground truth exceeds each of 21
thresholds ``0, 0.05, ..., 1``; its AUC is the curve's mean (so a perfect track scores 20/21: no
overlap exceeds 1; the mean IoU, the curve's continuous integral, is reported beside it).
Precision plot: the share of frames whose centre error is at most each of ``0 .. 50`` px; the
headline precision is the value at 20 px. Frames without a ground-truth box are skipped. Overall
curves are the mean of the per-sequence curves.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0, 1, 21)
PIXEL_THRESHOLDS = np.arange(0, 51)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap of ``(N, 4)`` ``x, y, w, h`` boxes, row by row."""
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def center_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in pixels between the boxes' centres."""
    return np.hypot(a[:, 0] + a[:, 2] / 2 - b[:, 0] - b[:, 2] / 2, a[:, 1] + a[:, 3] / 2 - b[:, 1] - b[:, 3] / 2)


def sequence_curves(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> dict:
    """Success and precision curves of one sequence (over its frames with a box)."""
    pred, gt = pred[visible], gt[visible]
    overlaps, errors = iou(pred, gt), center_error(pred, gt)
    success = (overlaps[:, None] > IOU_THRESHOLDS[None]).mean(0)
    precision = (errors[:, None] <= PIXEL_THRESHOLDS[None]).mean(0)
    return {"success": success.tolist(), "precision": precision.tolist(), "frames": int(visible.sum()),
            "mean_iou": float(overlaps.mean()), **_scores(success, precision)}


def _scores(success: np.ndarray, precision: np.ndarray) -> dict:
    return {"auc": float(success.mean()), "precision@20": float(precision[20]),
            "precision_auc": float(precision.mean())}


def summarize(per_sequence: dict[str, dict]) -> dict:
    """Overall curves (mean of the sequences') and their scores."""
    success = np.mean([s["success"] for s in per_sequence.values()], axis=0)
    precision = np.mean([s["precision"] for s in per_sequence.values()], axis=0)
    return {"success": success.tolist(), "precision": precision.tolist(),
            "mean_iou": float(np.mean([s["mean_iou"] for s in per_sequence.values()])),
            **_scores(success, precision)}
