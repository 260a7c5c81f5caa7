"""``vidssl extract``: dense features for every video of a dataset, one file per video, for
localisation (BMN) and any downstream model that reads feature sequences.

A *snippet* every ``stride`` frames (centres ``stride // 2, stride // 2 + stride, ...``; one
snippet for a video shorter than ``stride``): its centre frame for a 2D encoder, a clip of
``clip_len`` frames around it for a 3D one (indices clamped to the video). Each snippet is resized
to short side ``crop * 256 / 224`` and centre-cropped to ``crop``; its pooled backbone feature is one
row of the video's ``(T, D)`` matrix. ``rescale`` > 0 resamples the sequence to that many rows by
linear interpolation over time (BMN feeds 100 per video).

Files: ``<out>/<name>.npy`` (or ``.safetensors``, key ``features``), written atomically, and
``<out>/manifest.json``: the encoder, the protocol, and per video its source path, frames, fps,
snippet count and file; videos that could not be read are listed under ``skipped`` with the reason.
A rerun skips the videos whose file exists (a killed run resumes), and refuses a folder holding
another encoder's or protocol's features. Under ``torchrun`` rank ``r`` takes every ``world``-th
video and rank 0 merges the ranks' manifests.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vidssl.data.decoders import VideoReader
from vidssl.data.records import VideoRecord, VideoSource
from vidssl.data.sources import activitynet_id
from vidssl.data.transforms import normalize
from vidssl.engine.distributed import DistContext
from vidssl.errors import DataError, VidsslError
from vidssl.eval.encoders import Encoder
from vidssl.eval.progress import Progress

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SnippetProtocol:
    stride: int = 16  # frames between snippet centres
    clip_len: int = 1  # frames per snippet (3D encoders)
    crop: int = 224
    rescale: int = 0  # rows per video after resampling; 0 keeps one per snippet
    dtype: str = "float16"  # float16 | float32
    format: str = "npy"  # npy | safetensors

    def __post_init__(self) -> None:
        if min(self.stride, self.clip_len, self.crop) < 1 or self.rescale < 0:
            raise ValueError("snippet stride, clip length and crop must be positive, rescale >= 0")
        if self.dtype not in ("float16", "float32") or self.format not in ("npy", "safetensors"):
            raise ValueError("dtype float16|float32, format npy|safetensors")


def snippet_centres(num_frames: int, stride: int) -> list[int]:
    centres = list(range(stride // 2, num_frames, stride))
    return centres or [num_frames // 2]


def snippet_frames(centre: int, clip_len: int, num_frames: int) -> list[int]:
    """The ``clip_len`` frames around ``centre`` (clamped to the video)."""
    first = centre - clip_len // 2
    return [min(max(first + k, 0), num_frames - 1) for k in range(clip_len)]


@torch.no_grad()
def video_features(encoder: Encoder, reader: VideoReader, p: SnippetProtocol, device: torch.device,
                   batch: int = 32) -> torch.Tensor:
    """``(T, D)`` float32 features of one video's snippets (before ``rescale``)."""
    centres = snippet_centres(reader.num_frames, p.stride)
    rows = []
    for start in range(0, len(centres), batch):
        indices = [snippet_frames(c, p.clip_len, reader.num_frames) for c in centres[start:start + batch]]
        frames = reader.get_frames([i for clip in indices for i in clip])  # (B*L, C, H, W) uint8
        frames = TF.center_crop(TF.resize(frames, [round(p.crop * 256 / 224)], antialias=True), [p.crop])
        x = normalize(frames, encoder.mean, encoder.std).view(len(indices), p.clip_len, 3, p.crop, p.crop)
        x = x[:, 0] if encoder.backbone.kind == "2d" else x.permute(0, 2, 1, 3, 4)
        rows.append(encoder.backbone(x.to(device)).float().cpu())
    return torch.cat(rows)


def rescale(features: torch.Tensor, length: int) -> torch.Tensor:
    """``(T, D)`` resampled to ``(length, D)`` by linear interpolation over time (ends kept)."""
    if length == 0 or len(features) == length:
        return features
    if len(features) == 1:
        return features.expand(length, -1).clone()
    return F.interpolate(features.T[None], size=length, mode="linear", align_corners=True)[0].T


def feature_name(record: VideoRecord, source: VideoSource) -> str:
    """The file name of a video's features: the ActivityNet id, else its path inside the root."""
    if source.layout == "activitynet":
        return activitynet_id(record.path)
    try:
        rel = Path(record.path).relative_to(source.root)
    except ValueError:
        rel = Path(record.path.split("://")[-1])
    return str(rel.with_suffix("")).replace(os.sep, "__").replace("/", "__")


def _write(features: torch.Tensor, path: Path, p: SnippetProtocol) -> None:
    """Write atomically: a killed run never leaves a partial file under the final name."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    data = features.to(getattr(torch, p.dtype)).contiguous()
    try:
        if p.format == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data.numpy())
        else:
            from safetensors.torch import save_file

            save_file({"features": data}, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _header(encoder: Encoder, p: SnippetProtocol) -> dict:
    return {"encoder": {"name": encoder.name, "source": encoder.source, "fingerprint": encoder.fingerprint,
                        "arch": encoder.backbone.arch}, "protocol": asdict(p)}


def _check_folder(out: Path, header: dict) -> dict:
    """The manifest already in ``out`` (empty if none); an error if it is another extraction's."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VidsslError(f"{path}: unreadable manifest ({exc}); move it away to start over") from exc
    encoder = old.get("encoder") if isinstance(old, dict) else None
    same = isinstance(encoder, dict) and encoder.get("fingerprint") == header["encoder"]["fingerprint"]
    if not same or old.get("protocol") != header["protocol"]:
        raise VidsslError(f"{out} holds features of another encoder or protocol ({path}); choose another --out")
    return old


def extract_dataset(encoder: Encoder, source: VideoSource, opener, out: str | Path, p: SnippetProtocol,
                    ctx: DistContext, fps_default: float = 25.0) -> dict:
    """Features of every video of ``source`` into ``out`` (this rank's share); the merged manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = _header(encoder, p)
    previous = _check_folder(out, header)
    names = [feature_name(r, source) for r in source.records]
    if len(set(names)) != len(names):
        raise DataError(f"{source.root}: two videos map to one feature file name; extract the subsets apart")
    encoder.backbone.to(ctx.device).eval()
    mine = list(range(ctx.rank, len(names), ctx.world_size))
    videos, skipped = {}, {}
    progress = Progress(f"extracting {encoder.name}", len(mine), enabled=ctx.is_main)
    for i in mine:
        record, name = source.records[i], names[i]
        path = out / f"{name}.{p.format}"
        try:
            videos[name] = _extract_one(encoder, record, opener, path, p, ctx.device, previous.get("videos", {}))
        except (DataError, IndexError, RuntimeError) as exc:
            log.warning("extract skips %s: %s", record.path, exc)
            skipped[record.path] = str(exc)
        progress.update()
    part = {"videos": videos, "skipped": skipped}
    if ctx.distributed:
        parts: list = [None] * ctx.world_size
        dist.all_gather_object(parts, part)
    else:
        parts = [part]
    manifest = {**header, "fps_default": fps_default, "videos": {}, "skipped": {}}
    for got in (previous, *parts):
        manifest["videos"].update(got.get("videos", {}))
        manifest["skipped"].update(got.get("skipped", {}))
    for name in manifest["videos"]:
        manifest["skipped"].pop(manifest["videos"][name]["path"], None)
    if ctx.is_main:
        tmp = out / f".{MANIFEST}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, out / MANIFEST)
    return manifest


def _extract_one(encoder: Encoder, record: VideoRecord, opener, path: Path, p: SnippetProtocol,
                 device: torch.device, known: dict) -> dict:
    """One video's entry of the manifest; its features are computed unless ``path`` exists."""
    name = path.stem
    if path.is_file() and name in known:
        return known[name]
    reader = opener(record)
    try:
        entry = {"path": record.path, "frames": reader.num_frames, "fps": float(reader.fps or 0.0),
                 "file": path.name, "label": record.label}
        if not path.is_file():
            feats = video_features(encoder, reader, p, device)
            entry["snippets"] = len(feats)
            _write(rescale(feats, p.rescale), path, p)
        else:
            entry["snippets"] = len(snippet_centres(reader.num_frames, p.stride))
    finally:
        reader.close()
    entry["rows"] = p.rescale or entry["snippets"]
    return entry
