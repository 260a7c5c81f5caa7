"""TSN-style full fine-tuning (VCLR/SeCo protocol; Wang et al. 2016).

Recipe: ``segments`` equal segments, one frame (2D) or clip (3D) at a random position in each;
one random resized crop (scale 0.3-1) and horizontal flip for all of a sample's segments (TSN's
group crop), the flip off by default where labels name a direction (``flip_default``: SSv2, the
built-in motion classes) or, with ``mirror``, label-swapped (a flipped MoveLeft is a MoveRight:
``mirror_classes``); backbone + dropout + linear classifier;
segment logits averaged (mean consensus); cross-entropy; SGD momentum 0.9, weight decay 5e-4,
cosine lr over ``epochs``. Test: ``test_views`` uniformly spaced frames/clips, centre crop, logits
averaged. From random init this is the *supervised from scratch* ceiling.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vidssl.data.dataset import VideoDataset, collate_samples
from vidssl.data.samplers import TSNSampler
from vidssl.data.transforms import ClipAugment, flip_default
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import Encoder
from vidssl.eval.features import EvalClips, Protocol
from vidssl.eval.metrics import classification_report
from vidssl.eval.progress import Progress


@dataclass(frozen=True)
class FinetuneRecipe:
    segments: int = 3
    clip_len: int = 1  # frames per segment (1 for 2D backbones)
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    test_views: int = 10
    seed: int = 0
    flip: float | None = None  # flip probability; None: flip_default(the dataset's layout)
    mirror: bool = False  # flip with p 0.5 and give a flipped sample its mirror class (mirror_classes)

    def describe(self) -> str:
        flip = "default flip" if self.flip is None else f"flip p {self.flip}"
        flip = "label-swapped flip p 0.5" if self.mirror else flip
        return (f"TSN {self.segments} segments x {self.clip_len} frame(s), mean consensus, {flip}; SGD lr {self.lr} "
                f"cosine, wd {self.weight_decay}, {self.epochs} epochs, batch {self.batch_size}; "
                f"test {self.test_views} uniform views averaged")


# what a mirror image turns each direction word into (the first partner that names a class wins)
_MIRROR_WORDS = {"left": ("right",), "right": ("left",), "Left": ("Right",), "Right": ("Left",),
                 "clockwise": ("anticlockwise", "counterclockwise"), "anticlockwise": ("clockwise",),
                 "counterclockwise": ("clockwise",), "CW": ("CCW",), "CCW": ("CW",)}
_DIRECTION = re.compile(r"(?<![a-z])(anticlockwise|counterclockwise|clockwise|left|right)(?![a-z])"
                        r"|(Left|Right|CCW|CW)(?![a-z])")


def mirror_classes(class_names: list[str]) -> torch.Tensor:
    """For each class, the class its mirror image belongs to: itself when its name has no left/right
    or clockwise word, the class whose name swaps those words (MoveLeft -> MoveRight, "from left to
    right" -> "from right to left", RotateCW -> RotateCCW), or -1 when no class does (such samples
    are never flipped)."""
    index = {name: k for k, name in enumerate(class_names)}
    out = []
    for k, name in enumerate(class_names):
        if not _DIRECTION.search(name):
            out.append(k)
            continue
        partners = [_mirrored(name, alternative) for alternative in (0, 1)]
        out.append(next((index[p] for p in partners if p in index), -1))
    return torch.tensor(out)


def _mirrored(name: str, alternative: int) -> str:
    """``name`` with each direction word swapped for its ``alternative``-th mirror word (or the last)."""
    def swap(m: re.Match) -> str:
        options = _MIRROR_WORDS[m.group(0)]
        return options[min(alternative, len(options) - 1)]
    return _DIRECTION.sub(swap, name)


def mirror_batch(views: list[torch.Tensor], labels: torch.Tensor, mirror_of: torch.Tensor,
                 g: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each sample (all its views together) flipped horizontally with p 0.5 and relabelled with its
    mirror class; samples of a class without one (-1) are left as they are."""
    flip = (torch.rand(len(labels), generator=g) < 0.5) & (mirror_of[labels] >= 0)
    views = [torch.where(flip.view(-1, *[1] * (v.ndim - 1)), v.flip(-1), v) for v in views]
    return views, torch.where(flip, mirror_of[labels], labels)


class TSN(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Mean of the per-view logits (TSN's average consensus)."""
        b = views[0].shape[0]
        logits = self.head(self.backbone(torch.cat(views)))
        return logits.view(len(views), b, -1).mean(0)


def finetune(encoder: Encoder, data: EvalData, recipe: FinetuneRecipe, num_workers: int = 0,
             device: str = "cpu") -> dict:
    torch.manual_seed(recipe.seed)
    train_src, opener = data.load("train")
    test_src, test_opener = data.load("test")
    num_classes = len(train_src.class_names or [])
    is3d = encoder.backbone.kind == "3d"
    layout = "clip" if is3d else "frame"
    crop = encoder.input_size
    p_flip = flip_default(train_src.layout) if recipe.flip is None else recipe.flip
    p_flip = 0.0 if recipe.mirror else p_flip  # the loop flips, knowing the labels
    mirror_of = mirror_classes(list(train_src.class_names or []))
    aug = ClipAugment(size=crop, scale=(0.3, 1.0), p_jitter=0.0, p_gray=0.0, p_blur=0.0, p_flip=p_flip,
                      shared_crop=True, mean=encoder.mean, std=encoder.std)
    train_ds = VideoDataset(train_src, TSNSampler(recipe.segments, recipe.clip_len), aug, opener,
                            layout=layout, seed=recipe.seed)
    model = TSN(encoder.backbone, encoder.backbone.feature_dim, num_classes, recipe.dropout).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    steps = max(len(train_ds) // recipe.batch_size, 1) * recipe.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    model.train()
    progress = Progress(f"fine-tuning {encoder.name}", steps, "steps")
    for epoch in range(recipe.epochs):
        train_ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
        loader = DataLoader(train_ds, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                            num_workers=num_workers, generator=g, collate_fn=collate_samples)
        for batch in loader:
            views, labels = batch["views"], batch["label"]
            if recipe.mirror:
                views, labels = mirror_batch(views, labels, mirror_of, g)
            loss = F.cross_entropy(model([v.to(device) for v in views]), labels.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            progress.update()
    protocol = Protocol("clips" if is3d else "frames", recipe.test_views, recipe.clip_len, crop=crop)
    test_ds = EvalClips(test_src, test_opener, protocol, encoder.mean, encoder.std)
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for batch in DataLoader(test_ds, batch_size=recipe.batch_size, num_workers=num_workers):
            ok = batch["ok"]
            x = batch["views"][ok].to(device)  # (B, V, T, C, H, W)
            if not len(x):
                continue
            views = [x[:, v].permute(0, 2, 1, 3, 4) if is3d else x[:, v, 0] for v in range(x.shape[1])]
            scores.append(model(views).softmax(1).cpu())
            labels.append(torch.tensor([test_src.records[i].label for i in batch["index"][ok].tolist()]))
    report = classification_report(torch.cat(scores), torch.cat(labels), num_classes)
    return {**report, "train_loss_first": float(np.mean(losses[:5])), "train_loss_last": float(np.mean(losses[-5:])),
            "recipe": asdict(recipe)}
