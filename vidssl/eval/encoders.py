"""Frozen encoders for evaluation: a pretraining checkpoint, an exported backbone, or random init.

``load_encoder(spec)``: ``spec`` is a checkpoint path (``checkpoint.pt``), an export
(``*.safetensors`` / ``*.pt`` with its ``.json``), or ``random:ARCH[:SEED]``. The returned
:class:`Encoder` carries the normalisation statistics and input size the backbone was trained
with, and a fingerprint (content hash) that keys the feature cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
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


def _strict_load(backbone: Backbone, weights: dict[str, torch.Tensor], where: str) -> None:
    result = backbone.net.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise VidsslError(f"{where}: weights do not match {backbone.arch}: missing {result.missing_keys[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}")


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
    meta_path = path.with_suffix(".json")
    if meta_path.is_file():  # an export
        from vidssl.engine.export import load_exported

        meta = json.loads(meta_path.read_text())
        backbone = Backbone(meta["arch"])
        _strict_load(backbone, load_exported(path), str(path))
        return Encoder(backbone, meta.get("method", "export"), file_hash(path), tuple(meta["mean"]),
                       tuple(meta["std"]), int(meta["input_size"]), int(meta.get("frames", 1)),
                       int(meta.get("stride", 1)), str(path))
    from vidssl.engine.checkpoint import load_checkpoint
    from vidssl.engine.config import config_from_yaml_text
    from vidssl.methods import METHODS

    state = load_checkpoint(path)
    cfg = config_from_yaml_text(state["config"])
    method = METHODS[cfg.method](cfg.method_config(), Backbone(cfg.arch()), False)
    method.load_state_dict(state["model"], strict=True)
    sampler = METHODS[cfg.method].data_spec(cfg.method_config()).sampler
    return Encoder(method.backbone, cfg.method, file_hash(path), tuple(cfg.augment.mean), tuple(cfg.augment.std),
                   cfg.augment.size, getattr(sampler, "clip_len", 1), getattr(sampler, "dilation", 1), str(path))
