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
- ``coclr``: an official CoCLR / InfoNCE checkpoint (TengdaHan/CoCLR ``main_coclr.py``,
  ``main_nce.py``) with the S3D backbone (``--net s3d``): ``state_dict`` with the query backbone
  under ``module.encoder_q.0.``, in CoCLR's own S3D names (``Conv_1a.conv1``, ``Mixed_4b.branch1.1.bn2``,
  and the same modules again as ``block1.0`` ...), mapped onto torchvision's ``s3d`` (``--arch s3d``).
  CoCLR's BatchNorm uses PyTorch's default eps 1e-5 where torchvision's S3D has 1e-3: a loaded
  network's features differ slightly unless the running variances are large. S3D-G checkpoints
  (``--net s3dg``, self-gating) have no torchvision counterpart and are refused.
- ``mlfo``: an official MLFO checkpoint (shvdiwnkozbw/Video-Representation-via-Multi-level-Optimization,
  ``train.py`` saves ``GreatModel.state_dict()``): the backbone under ``backbone.`` in Hara et al.'s
  3D-ResNet names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), mapped onto ``r3d_18_hara``
  (``--arch r3d_18_hara``: torchvision's R3D-18 with that code's 7x7x7 stem and max pool); its
  projection heads, prototypes and motion-excitation branches are not read.
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

FORMATS = ("auto", "torchvision", "moco", "seco", "vclr", "coclr", "mlfo", "vidssl")
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
    if "backbone.layer1.0.conv1.weight" in raw and "prototype.weight" in raw:
        return "mlfo"
    state = raw.get("state_dict")
    if isinstance(state, dict) and any(k.startswith(("module.encoder_q.0.Conv_1a.", "encoder_q.0.Conv_1a."))
                                       for k in state):
        return "coclr"
    if isinstance(state, dict) and any(k.startswith("module.encoder_q.") for k in state):
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
    if fmt == "coclr":
        return coclr_s3d_state(_strip(_strip(raw["state_dict"], "module."), "encoder_q.0."))
    if fmt == "mlfo":
        return hara_r3d_state(_strip(_strip(raw, "module."), "backbone."))
    state = raw.get("state_dict", raw.get("model", raw)) if fmt == "torchvision" else raw
    return _strip(state, "module.")


# CoCLR's S3D layers, in order, and where torchvision's s3d keeps them (``features.<n>``)
_COCLR_S3D = {"Conv_1a": 0, "Conv_2b": 2, "Conv_2c": 3, "Mixed_3b": 5, "Mixed_3c": 6, "Mixed_4b": 8,
              "Mixed_4c": 9, "Mixed_4d": 10, "Mixed_4e": 11, "Mixed_4f": 12, "Mixed_5b": 14, "Mixed_5c": 15}
# inside a layer: CoCLR's BasicConv3d (conv, bn) / STConv3d (conv1, bn1, conv2, bn2) against
# torchvision's Conv3dNormActivation (0, 1) / TemporalSeparableConv ((0.0, 0.1), (1.0, 1.1))
_COCLR_PARTS = {"conv": "0", "bn": "1", "conv1": "0.0", "bn1": "0.1", "conv2": "1.0", "bn2": "1.1"}
_COCLR_BRANCH = {"branch0.0": "branch0", "branch1.0": "branch1.0", "branch1.1": "branch1.1",
                 "branch2.0": "branch2.0", "branch2.1": "branch2.1", "branch3.1": "branch3.1"}


def coclr_s3d_state(state: dict) -> dict:
    """CoCLR's S3D tensors under torchvision ``s3d`` names (``block<N>.*`` aliases dropped); a key
    it cannot place keeps its name (and is reported as not used)."""
    if any("gating" in k for k in state):
        raise VidsslError("an S3D-G checkpoint (self-gating): torchvision's s3d has no gating; not importable")
    out = {}
    for key, value in state.items():
        layer, _, rest = key.partition(".")
        if layer.startswith("block"):
            continue  # the same tensors as the named layers
        if layer not in _COCLR_S3D:
            out[key] = value
            continue
        prefix = f"features.{_COCLR_S3D[layer]}"
        if layer.startswith("Mixed"):
            branch = ".".join(rest.split(".")[:2])
            if branch not in _COCLR_BRANCH:
                out[key] = value
                continue
            prefix, rest = f"{prefix}.{_COCLR_BRANCH[branch]}", rest[len(branch) + 1:]
        part, _, name = rest.partition(".")
        out[f"{prefix}.{_COCLR_PARTS[part]}.{name}" if part in _COCLR_PARTS else key] = value
    return out


# Hara et al.'s BasicBlock (conv1, bn1, conv2, bn2) against torchvision's video BasicBlock
# (conv1 = Sequential(conv, bn, relu), conv2 = Sequential(conv, bn)); their stem against HaraStem
_HARA_PARTS = {"conv1": "conv1.0", "bn1": "conv1.1", "conv2": "conv2.0", "bn2": "conv2.1"}
_HARA_STEM = {"conv1": "stem.0", "bn1": "stem.1"}


def hara_r3d_state(state: dict) -> dict:
    """Hara et al.'s 3D-ResNet tensors under ``r3d_18_hara``'s names; other keys keep theirs."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in _HARA_STEM and len(parts) == 2:
            key = f"{_HARA_STEM[parts[0]]}.{parts[1]}"
        elif parts[0].startswith("layer") and len(parts) == 4 and parts[2] in _HARA_PARTS:
            key = f"{parts[0]}.{parts[1]}.{_HARA_PARTS[parts[2]]}.{parts[3]}"
        out[key] = value
    return out


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
