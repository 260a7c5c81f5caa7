"""Feature extraction with the papers' protocols, cached on disk.

- **frames** (SeCo/VCLR, docs/evaluation.md): ``num`` evenly spaced frames, short side resized, centre
  crop, backbone pooled features averaged over the frames (SeCo: 30 frames, 256 → 224).
- **clips** (CORP/MLFO): ``num`` evenly spaced clips of ``clip_len`` frames x 1 (centre) or 3
  (left/centre/right) crops, features averaged over clips and crops (CORP: 10 x 3).

A 2D backbone given clips averages its per-frame features within each clip.

Features are cached as ``<cache>/<key>.pt`` with ``<key>.json``, the manifest: the encoder's
fingerprint (checkpoint content hash), the protocol, and the data identity. Any change gives a new
key; the same evaluation later reuses the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from torch.utils.data import DataLoader, Dataset

from vidssl.data.dataset import read_sample
from vidssl.data.records import VideoSource
from vidssl.data.samplers import UniformClipSampler, UniformFrameSampler
from vidssl.data.transforms import normalize
from vidssl.errors import DataError
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import Encoder
from vidssl.eval.progress import Progress
from vidssl.models.backbones import Backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    kind: str = "frames"  # frames | clips
    num: int = 30  # frames, or clips
    clip_len: int = 8
    stride: int = 1
    crops: int = 1  # 1: centre; 3: left, centre, right
    crop: int = 32
    resize: int = 0  # short side before cropping; 0: round(crop * 256 / 224)

    def __post_init__(self) -> None:
        if self.kind not in ("frames", "clips") or self.crops not in (1, 3) or self.num < 1:
            raise ValueError(f"bad protocol {self}: kind frames|clips, crops 1|3, num >= 1")

    @property
    def short_side(self) -> int:
        return self.resize or round(self.crop * 256 / 224)

    def describe(self) -> str:
        what = f"{self.num} frames" if self.kind == "frames" else (
            f"{self.num} clips x {self.crops} crop(s) of {self.clip_len} frames, stride {self.stride}")
        return f"{what}; short side {self.short_side}, {self.crop}px crop; features averaged"


def spatial_crops(x: torch.Tensor, crop: int, n: int) -> list[torch.Tensor]:
    """Centre crop, or three crops along the longer side (left/top, centre, right/bottom)."""
    if n == 1:
        return [F.center_crop(x, [crop, crop])]
    h, w = x.shape[-2:]
    out = []
    for frac in (0.0, 0.5, 1.0):
        top = round((h - crop) * (frac if h > w else 0.5))
        left = round((w - crop) * (frac if w >= h else 0.5))
        out.append(x[..., top:top + crop, left:left + crop])
    return out


class EvalClips(Dataset):
    """One item per video: all views ``(V, T, C, H, W)`` (V = clips x crops; T = 1 for frames).
    A video that cannot be read yields ``ok=False`` (and zeros) instead of a substitute."""

    def __init__(self, source: VideoSource, opener, protocol: Protocol, mean, std) -> None:
        self.source, self.opener, self.p = source, opener, protocol
        self.mean, self.std = tuple(mean), tuple(std)
        if protocol.kind == "frames":
            self.sampler = UniformFrameSampler(protocol.num)
        else:
            self.sampler = UniformClipSampler(protocol.num, protocol.clip_len, protocol.stride)

    def __len__(self) -> int:
        return len(self.source.records)

    def _empty(self) -> torch.Tensor:
        t = 1 if self.p.kind == "frames" else self.p.clip_len
        return torch.zeros(self.p.num * self.p.crops, t, 3, self.p.crop, self.p.crop)

    def __getitem__(self, i: int) -> dict:
        try:
            _, clips = read_sample(self.opener, self.source.records[i], self.sampler, None)
        except DataError as exc:
            log.warning("evaluation skips %s", exc)
            return {"views": self._empty(), "ok": False, "index": i}
        views = []
        for clip in clips:
            clip = F.resize(clip, [self.p.short_side], antialias=True)
            views += [normalize(c, self.mean, self.std) for c in spatial_crops(clip, self.p.crop, self.p.crops)]
        return {"views": torch.stack(views), "ok": True, "index": i}


def embed(backbone: Backbone, views: torch.Tensor) -> torch.Tensor:
    """Pooled features of ``(B, V, T, C, H, W)`` views, averaged over V (and T for 2D backbones)."""
    b, v, t = views.shape[:3]
    if backbone.kind == "2d":
        feats = backbone(views.flatten(0, 2)).view(b, v * t, -1)
    else:
        feats = backbone(views.flatten(0, 1).permute(0, 2, 1, 3, 4)).view(b, v, -1)
    return feats.mean(1)


@torch.no_grad()
def embed_all(backbone: Backbone, clips: EvalClips, batch_size: int = 8, num_workers: int = 0,
              device: str | torch.device = "cpu", progress: Progress | None = None) -> tuple[torch.Tensor, list[int]]:
    """Features ``(N, D)`` of the readable videos of ``clips`` and their indices (unreadable ones
    left out); ``backbone`` as it is (the caller sets eval mode)."""
    feats, ok_idx = [], []
    for batch in DataLoader(clips, batch_size=batch_size, num_workers=num_workers):
        ok = batch["ok"]
        if ok.any():
            feats.append(embed(backbone, batch["views"][ok].to(device)).float().cpu())
            ok_idx += batch["index"][ok].tolist()
        if progress is not None:
            progress.update(len(ok))
    return (torch.cat(feats) if feats else torch.empty(0, 0)), ok_idx


@dataclass
class FeatureSet:
    features: torch.Tensor  # (N, D) float32
    labels: torch.Tensor  # (N,) long, -1 for unlabeled
    paths: list[str]
    groups: list[str]
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cache_file: str = ""


def _cache_key(encoder: Encoder, protocol: Protocol, data: EvalData, subset: str) -> dict:
    return {"encoder": encoder.fingerprint, "encoder_source": encoder.source, "protocol": asdict(protocol),
            "data": asdict(data), "subset": subset, "version": 1}


@torch.no_grad()
def extract(encoder: Encoder, data: EvalData, subset: str, protocol: Protocol, cache_dir: str | Path | None = None,
            batch_size: int = 8, num_workers: int = 0, device: str = "cpu") -> FeatureSet:
    """Features of ``subset`` (train/test); reused from ``cache_dir`` when the manifest matches."""
    manifest = _cache_key(encoder, protocol, data, subset)
    key = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]
    cached = Path(cache_dir) / f"{key}.pt" if cache_dir else None
    if cached is not None and cached.is_file():
        d = torch.load(cached, weights_only=True)
        return FeatureSet(d["features"], d["labels"], d["paths"], d["groups"], d["class_names"], d["skipped"],
                          str(cached))
    source, opener = data.load(subset)
    ds = EvalClips(source, opener, protocol, encoder.mean, encoder.std)
    backbone = encoder.backbone.to(device).eval()
    progress = Progress(f"features of {encoder.name}, {subset}", len(ds))
    features, ok_idx = embed_all(backbone, ds, batch_size, num_workers, device, progress)
    if not ok_idx:
        raise DataError(f"{data.describe()}: no readable video in the {subset} split")
    records = source.records
    skipped = sorted(set(range(len(records))) - set(ok_idx))
    fs = FeatureSet(
        features,
        torch.tensor([-1 if records[i].label is None else records[i].label for i in ok_idx]),
        [records[i].path for i in ok_idx],
        [records[i].group or "" for i in ok_idx],
        list(source.class_names or []),
        [records[i].path for i in skipped],
    )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fs.cache_file = str(cached)
        torch.save(asdict(fs), cached)
        cached.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return fs
