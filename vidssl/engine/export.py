"""``vidssl export``: the backbone as plain torchvision-compatible weights plus JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidssl.engine.checkpoint import load_checkpoint
from vidssl.engine.config import config_from_yaml_text
from vidssl.errors import VidsslError
from vidssl.methods import METHODS
from vidssl.models.backbones import Backbone


def export_backbone(checkpoint: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (``.safetensors`` or ``.pt``, weights only) and ``out`` with ``.json``."""
    state = load_checkpoint(checkpoint)
    cfg = config_from_yaml_text(state["config"])
    method = METHODS[cfg.method](cfg.method_config(), Backbone(cfg.arch()), False)
    method.load_state_dict(state["model"], strict=True)
    sampler = METHODS[cfg.method].data_spec(cfg.method_config()).sampler
    return write_export(method.backbone, out, mean=list(cfg.augment.mean), std=list(cfg.augment.std),
                        input_size=cfg.augment.size, frames=getattr(sampler, "clip_len", 1),
                        stride=getattr(sampler, "dilation", 1), method=cfg.method, step=int(state["step"]),
                        source_checkpoint=str(Path(checkpoint).resolve()))


def write_export(backbone: Backbone, out: str | Path, **meta) -> tuple[Path, Path]:
    """``backbone``'s weights as ``out`` and its metadata (``meta``: mean, std, input_size, frames,
    stride, method, ...) with how to load it as ``out`` with ``.json``."""
    out = Path(out)
    if out.suffix not in (".safetensors", ".pt"):
        raise VidsslError(f"{out}: the export must end in .safetensors or .pt")
    weights = {k: v.detach().contiguous().clone() for k, v in backbone.net.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(out))
    else:
        torch.save(weights, out)
    head = "classifier" if backbone.arch == "s3d" else "fc"
    meta = {
        "format": "vidssl-backbone/1",
        "arch": backbone.arch,
        "torchvision": (f"torchvision.models{'.video' if backbone.kind == '3d' else ''}.{backbone.arch}"
                        if backbone.is_torchvision else None),
        "load": (f"model = {backbone.arch}(weights=None); model.{head} = torch.nn.Identity(); "
                 "model.load_state_dict(weights, strict=True)") if backbone.is_torchvision
        else "vidssl.models.backbones.Backbone(arch).net.load_state_dict(weights, strict=True)",
        "input_layout": "B,C,H,W" if backbone.kind == "2d" else "B,C,T,H,W",
        "feature_dim": backbone.feature_dim,
        **meta,
    }
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out, meta_path


def load_exported(path: str | Path) -> dict[str, torch.Tensor]:
    """Read exported weights (either format) safely."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
