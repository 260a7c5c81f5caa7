"""Frozen encoders for evaluation: a pretraining checkpoint, an exported backbone, or random init.

``load_encoder(spec)``: ``spec`` is a checkpoint path (``checkpoint.pt``), an export
(``*.safetensors`` / ``*.pt`` with its ``.json``), or ``random:ARCH[:SEED]``. The returned
:class:`Encoder` carries the normalisation statistics and input size the backbone was trained
with, and a fingerprint (content hash) that keys the feature cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vidssl.engine.checkpoint import load_weights
from vidssl.errors import VidsslError
from vidssl.models.backbones import ARCHS, Backbone


@dataclass
class Encoder:
    backbone: Backbone
    name: str  # what tables show: the method, or "random"
    fingerprint: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    clip_len: int
    stride: int
    source: str


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _export_encoder(path: Path, meta: dict, weights: dict[str, torch.Tensor]) -> Encoder:
    try:
        backbone = Backbone(str(meta["arch"]))
        mean, std = tuple(float(x) for x in meta["mean"]), tuple(float(x) for x in meta["std"])
        size, frames, stride = int(meta["input_size"]), int(meta.get("frames", 1)), int(meta.get("stride", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise VidsslError(f"{path.with_suffix('.json')}: bad export metadata ({type(exc).__name__}: {exc})") from exc
    if len(mean) != 3 or len(std) != 3 or min(size, frames, stride) < 1:
        raise VidsslError(f"{path.with_suffix('.json')}: bad export metadata (mean/std of 3, positive sizes)")
    load_weights(backbone.net, weights, path, backbone.arch)
    return Encoder(backbone, str(meta.get("method", "export")), file_hash(path), mean, std, size, frames,
                   stride, str(path))


def load_encoder(spec: str, default_size: int = 32, clip_len: int = 8) -> Encoder:
    if spec.startswith("random:"):
        parts = spec.split(":")
        arch, seed = parts[1], int(parts[2]) if len(parts) > 2 else 0
        if arch not in ARCHS:
            raise VidsslError(f"{spec}: unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        torch.manual_seed(seed)
        backbone = Backbone(arch)
        name = "random" + (f"-s{seed}" if seed else "")
        return Encoder(backbone, name, f"random-{arch}-{seed}", IMAGENET_MEAN, IMAGENET_STD,
                       default_size, clip_len if backbone.kind == "3d" else 1, 1, spec)
    path = Path(spec)
    if not path.is_file():
        raise VidsslError(f"{spec}: encoder not found (a checkpoint, an export, or random:ARCH)")
    from vidssl.engine.export import export_meta, load_exported

    meta = export_meta(path)
    if meta is not None:
        return _export_encoder(path, meta, load_exported(path))
    if path.suffix == ".safetensors":
        raise VidsslError(f"{path}: an export without its metadata {path.with_suffix('.json').name} "
                          "(written by `vidssl export` beside the weights)")
    from vidssl.engine.checkpoint import load_method
    from vidssl.methods import METHODS

    cfg, method, _ = load_method(path)
    sampler = METHODS[cfg.method].data_spec(cfg.method_config()).sampler
    return Encoder(method.backbone, cfg.method, file_hash(path), tuple(cfg.augment.mean), tuple(cfg.augment.std),
                   cfg.augment.size, getattr(sampler, "clip_len", 1), getattr(sampler, "dilation", 1), str(path))
