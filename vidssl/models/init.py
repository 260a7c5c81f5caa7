"""Initialise a backbone from weights trained elsewhere (``model.init``, ``vidssl import``).

Formats (``auto`` tells them apart by their structure):

- ``torchvision``: a torchvision state dict (``.pth``/``.safetensors``), e.g. ImageNet weights a
  user fetched; a ``module.`` prefix (DataParallel) is removed, the classifier ``fc`` dropped.
- ``moco``: a MoCo-v1/v2 checkpoint (facebookresearch/moco ``main_moco.py``): ``state_dict`` with
  the query encoder under ``module.encoder_q.``; the key encoder, queue and MLP head are dropped.
- ``seco`` / ``vclr``: the official SeCo / VCLR checkpoints (``save_checkpoint`` in their
  ``util.py``): ``model`` holds the DDP-wrapped query network (``module.`` + torchvision ResNet
  names, heads ``fc_inter``/``fc_intra``/``fc_order``/``fc_order_classifier``/``fc_tsn``...), beside
  ``model_ema``, ``contrast`` and the argparse ``opt`` (the only non-tensor class allowed to load).
- ``vidssl``: a vidssl pretraining checkpoint (its method's backbone) or export.

Only keys the backbone has are loaded, so a head never reaches it. Loading reports matched,
missing and unexpected keys and fails when too few match or a shape differs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vidssl.errors import VidsslError
from vidssl.models.backbones import Backbone

FORMATS = ("auto", "torchvision", "moco", "seco", "vclr", "vidssl")
MIN_MATCHED = 0.9  # the share of the backbone's tensors a file must provide


@dataclass(frozen=True)
class InitReport:
    path: str
    format: str
    matched: int
    missing: list[str]
    unexpected: list[str]

    def describe(self) -> str:
        return (f"initialised from {self.path} ({self.format}): {self.matched} tensors matched, "
                f"{len(self.missing)} missing {self.missing[:3]}, {len(self.unexpected)} not used "
                f"(heads and other networks) {self.unexpected[:3]}")


def read_raw(path: str | os.PathLike[str], what: str = "weights") -> dict:
    """The file's top-level mapping, read without executing code (safetensors, or ``torch.load``
    with ``weights_only=True``; argparse namespaces, which the official SeCo/VCLR checkpoints hold,
    are the one class allowed). ``what`` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise VidsslError(f"{path}: {what} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused pickles, truncated or foreign files
        raise VidsslError(f"{path}: not loadable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise VidsslError(f"{path}: expected a mapping of {what}, got a {type(raw).__name__}")
    return raw


def detect_format(raw: dict) -> str:
    if isinstance(raw.get("config"), str) and isinstance(raw.get("model"), dict):
        return "vidssl"
    if isinstance(raw.get("model"), dict) and "model_ema" in raw:
        return "vclr" if "contrast_tsn" in raw else "seco"
    if isinstance(raw.get("state_dict"), dict) and any(k.startswith("module.encoder_q.") for k in raw["state_dict"]):
        return "moco"
    return "torchvision"


def _strip(state: dict, prefix: str, only: bool = False) -> dict:
    """Keys with ``prefix`` removed; with ``only``, the keys without it are dropped."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()
            if k.startswith(prefix) or not only}


def backbone_state(raw: dict, fmt: str) -> dict[str, torch.Tensor]:
    """The tensors of ``raw`` (a file in format ``fmt``) under the backbone's names; heads and
    other networks keep names the backbone does not have."""
    if fmt == "vidssl":
        return raw  # an export: the backbone's own names (a checkpoint is read by its method)
    if fmt == "moco":
        return _strip(raw["state_dict"], "module.encoder_q.", only=True)
    if fmt in ("seco", "vclr"):
        return _strip(raw["model"], "module.")
    state = raw.get("state_dict", raw.get("model", raw)) if fmt == "torchvision" else raw
    return _strip(state, "module.")


def init_backbone(backbone: Backbone, path: str | os.PathLike[str], fmt: str = "auto") -> InitReport:
    """Load the weights of ``path`` into ``backbone.net`` (tensor-exact, in place)."""
    if fmt not in FORMATS:
        raise VidsslError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from vidssl.engine.export import export_meta

    raw = read_raw(path)
    if fmt == "auto":
        fmt = "vidssl" if export_meta(path) is not None else detect_format(raw)
    try:
        if fmt == "vidssl" and "config" in raw:  # where a method keeps its backbone depends on the method
            from vidssl.engine.checkpoint import load_method

            state = load_method(path)[1].backbone.net.state_dict()
        else:
            state = backbone_state(raw, fmt)
    except (KeyError, AttributeError, TypeError) as exc:
        raise VidsslError(f"{path}: not a {fmt} checkpoint ({type(exc).__name__}: {exc})") from exc
    own = backbone.net.state_dict()
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    matched = {k: v for k, v in tensors.items() if k in own}
    wrong = [f"{k} {tuple(v.shape)} (backbone {tuple(own[k].shape)})" for k, v in matched.items()
             if v.shape != own[k].shape]
    if wrong:
        raise VidsslError(f"{path}: {len(wrong)} tensors have another shape than {backbone.arch}'s, "
                          f"e.g. {wrong[:3]}")
    report = InitReport(str(path), fmt, len(matched), sorted(set(own) - set(matched)),
                        sorted(set(tensors) - set(matched)))
    if len(matched) < MIN_MATCHED * len(own):
        raise VidsslError(f"{path}: only {len(matched)} of {backbone.arch}'s {len(own)} tensors found "
                          f"(format {fmt}; is it another architecture?); {report.describe()}")
    with torch.no_grad():
        for k, v in matched.items():
            own[k].copy_(v)
    return report
