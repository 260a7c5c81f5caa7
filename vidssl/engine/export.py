"""``vidssl export``: the backbone as plain torchvision-compatible weights plus JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidssl.engine.checkpoint import load_method
from vidssl.errors import VidsslError
from vidssl.methods import METHODS
from vidssl.models.backbones import Backbone


def export_backbone(checkpoint: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (``.safetensors`` or ``.pt``, weights only) and ``out`` with ``.json``."""
    cfg, method, state = load_method(checkpoint)
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
    meta_path = out.with_suffix(".json")
    taken = [t for t in (out, meta_path) if t.exists()]
    if taken and export_meta(out) is None:
        raise VidsslError(f"{taken[0]}: exists and is not a vidssl export of {out.name}; refusing to overwrite "
                          "it (choose another output name)")
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
        "weights": out.name,
        **meta,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out, meta_path


def export_meta(path: str | Path) -> dict | None:
    """The metadata of the export ``path`` — its ``.json`` neighbour, if that file is a vidssl
    export's metadata naming ``path`` — else None: a neighbour file never changes how another file
    loads. Exports written before the ``weights`` key existed are recognised as ``.safetensors``."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VidsslError(f"{meta_path}: unreadable export metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "vidssl-backbone/1":
        return None
    named = meta.get("weights")
    return meta if named == path.name or (named is None and path.suffix == ".safetensors") else None


def load_exported(path: str | Path) -> dict[str, torch.Tensor]:
    """Read exported weights (either format) safely."""
    from vidssl.models.init import read_raw

    return read_raw(path, "exported weights")
