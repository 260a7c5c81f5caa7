"""Temporal probes on frozen features; labels are made from time itself, so any dataset works.

- **arrow of time**: is a sequence played forward or reversed? A 3D backbone embeds the clip and
  the reversed clip; a 2D backbone's per-frame features are concatenated in order or reversed.
- **clip order**: which of two clips (from the first and the second half of the video) comes
  first? The pair's features are concatenated in both orders.

A logistic regression (standardised features) is trained on the train split's videos and
evaluated on the test split's; chance is 50%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from vidssl.data.records import VideoSource
from vidssl.data.samplers import segment_bounds
from vidssl.data.transforms import normalize
from vidssl.errors import DataError
from vidssl.eval.encoders import Encoder
from vidssl.eval.progress import Progress


@dataclass(frozen=True)
class OrderProtocol:
    frames: int = 8  # frames per sequence (2D) / per clip (3D)
    crop: int = 32


def _sequence_indices(lo: int, hi: int, n: int) -> list[int]:
    return [min(lo + int((i + 0.5) * (hi - lo) / n), hi - 1) for i in range(n)]


@torch.no_grad()
def _video_features(encoder: Encoder, frames: torch.Tensor, p: OrderProtocol) -> dict[str, torch.Tensor]:
    """Features of the whole sequence forward/reversed and of its two halves."""
    x = F.resize(frames, [round(p.crop * 256 / 224)], antialias=True)
    x = normalize(F.center_crop(x, [p.crop, p.crop]), encoder.mean, encoder.std)  # (2T, C, H, W)
    bb = encoder.backbone
    n = p.frames
    whole, first, second = x[::2], x[:n], x[n:]
    if bb.kind == "3d":
        clips = torch.stack([whole, whole.flip(0), first, second]).permute(0, 2, 1, 3, 4)
        f = bb(clips)
        return {"fwd": f[0], "rev": f[1], "a": f[2], "b": f[3]}
    per_frame = bb(whole)  # (n, D)
    halves = bb(torch.cat([first, second])).view(2, n, -1).mean(1)
    return {"fwd": per_frame.flatten(), "rev": per_frame.flip(0).flatten(), "a": halves[0], "b": halves[1]}


def probe_features(encoder: Encoder, source: VideoSource, opener, p: OrderProtocol) -> dict[str, torch.Tensor]:
    """Per video: the arrow-of-time pair and the clip-order pair. Unreadable videos are skipped."""
    encoder.backbone.eval()
    rows: dict[str, list[torch.Tensor]] = {"fwd": [], "rev": [], "a": [], "b": []}
    progress = Progress(f"order probe features of {encoder.name}", len(source.records))
    for record in source.records:
        progress.update()
        try:
            reader = opener(record)
            try:
                (lo1, hi1), (lo2, hi2) = segment_bounds(reader.num_frames, 2)
                idx = _sequence_indices(lo1, hi1, p.frames) + _sequence_indices(lo2, hi2, p.frames)
                frames = reader.get_frames(idx)
            finally:
                reader.close()
        except DataError:
            continue
        for k, v in _video_features(encoder, frames, p).items():
            rows[k].append(v.float())
    if not rows["fwd"]:
        raise DataError(f"{source.root}: no readable video for the order probe")
    return {k: torch.stack(v) for k, v in rows.items()}


def _pairs(f: dict[str, torch.Tensor], task: str) -> tuple[np.ndarray, np.ndarray]:
    if task == "arrow":
        x = torch.cat([f["fwd"], f["rev"]])
    else:
        x = torch.cat([torch.cat([f["a"], f["b"]], 1), torch.cat([f["b"], f["a"]], 1)])
    y = np.r_[np.ones(len(f["fwd"])), np.zeros(len(f["fwd"]))]
    return x.numpy().astype(np.float64), y


def order_probe(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
    """Accuracy of the arrow-of-time and clip-order probes (train split → test split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for task in ("arrow", "clip_order"):
        xtr, ytr = _pairs(train, task)
        xte, yte = _pairs(test, task)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
        clf.fit(xtr, ytr)
        out[task] = float((clf.predict(xte) == yte).mean())
    return out
