"""Full fine-tuning: TSN (VCLR/SeCo protocol; Wang et al. 2016) and CORP's semi-supervised setting.

Recipe: ``segments`` equal segments, one frame (2D) or clip (3D) at a random position in each;
one random resized crop (scale 0.3-1) and horizontal flip for all of a sample's segments (TSN's
group crop), the flip off by default where labels name a direction (``flip_default``: SSv2, the
built-in motion classes) or, with ``mirror``, label-swapped (a flipped MoveLeft is a MoveRight:
``mirror_classes``); backbone + dropout + linear classifier;
segment logits averaged (mean consensus); cross-entropy; SGD momentum 0.9, weight decay 5e-4,
cosine lr over ``epochs``. Test: ``test_views`` uniformly spaced frames/clips (x ``test_crops``),
logits averaged. From random init this is the *supervised from scratch* ceiling.

``label_fraction`` < 1 trains on a class-balanced subset of the train split (:func:`label_subset`;
CORP Sec. 4.1: "1% and 10% videos ... keep the percentages of each class"). Under ``torchrun`` the
model is wrapped in DDP, each rank trains on its share of every batch and evaluates its share of the
test videos; on a GPU the forward passes run in bf16 autocast.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from vidssl.data.dataset import VideoDataset, collate_samples
from vidssl.data.records import VideoSource
from vidssl.data.samplers import TSNSampler
from vidssl.data.transforms import ClipAugment, flip_default
from vidssl.engine.distributed import DistContext
from vidssl.errors import DataError, VidsslError
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
    batch_size: int = 16  # global: split over the ranks under torchrun
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    test_views: int = 10
    test_crops: int = 1  # 1: centre; 3: left, centre, right (CORP's 10 clips x 3 crops)
    seed: int = 0
    flip: float | None = None  # flip probability; None: flip_default(the dataset's layout)
    mirror: bool = False  # flip with p 0.5 and give a flipped sample its mirror class (mirror_classes)
    label_fraction: float = 1.0  # share of the train split's videos, class-balanced (label_subset)
    subset_seed: int = 0
    amp: bool = True  # bf16 autocast on a GPU

    def __post_init__(self) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label fraction must be in (0, 1], got {self.label_fraction}")

    def describe(self) -> str:
        flip = "default flip" if self.flip is None else f"flip p {self.flip}"
        flip = "label-swapped flip p 0.5" if self.mirror else flip
        labels = "" if self.label_fraction == 1 else f"{100 * self.label_fraction:g}% of the labels (seed " \
                                                     f"{self.subset_seed}); "
        return (f"{labels}TSN {self.segments} segments x {self.clip_len} frame(s), mean consensus, {flip}; SGD lr "
                f"{self.lr} cosine, wd {self.weight_decay}, {self.epochs} epochs, batch {self.batch_size}; "
                f"test {self.test_views} uniform views x {self.test_crops} crop(s) averaged")


def label_subset(labels: list[int], fraction: float, seed: int) -> list[int]:
    """Indices of a class-balanced random subset: from each class with ``n`` videos,
    ``max(1, round(fraction * n))`` drawn without replacement with ``seed`` (so every class keeps
    its share and at least one video). Sorted; the same for the same labels, fraction and seed."""
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    chosen = []
    for y in sorted(by_class):
        members = by_class[y]
        take = max(1, round(fraction * len(members)))
        chosen += [members[j] for j in torch.randperm(len(members), generator=g)[:take].tolist()]
    return sorted(chosen)


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


def train_subset(source: VideoSource, recipe: FinetuneRecipe) -> VideoSource:
    """The train split, or its :func:`label_subset` when ``recipe.label_fraction`` < 1."""
    if recipe.label_fraction == 1:
        return source
    if any(r.label < 0 for r in source.records):
        raise DataError("--label-fraction needs a labelled train split")
    keep = label_subset([r.label for r in source.records], recipe.label_fraction, recipe.subset_seed)
    return replace(source, records=[source.records[i] for i in keep])


def finetune(encoder: Encoder, data: EvalData, recipe: FinetuneRecipe, num_workers: int = 0,
             ctx: DistContext | None = None) -> dict:
    """Fine-tune ``encoder`` with ``recipe`` and evaluate it on the test split; every rank returns the
    same metrics (and ``subset``: the train videos used, as ``(path, label)``)."""
    ctx = ctx or DistContext(0, 1, 0, torch.device("cpu"))
    if recipe.batch_size % ctx.world_size:
        raise VidsslError(f"batch size {recipe.batch_size} does not split over {ctx.world_size} ranks")
    torch.manual_seed(recipe.seed)
    full_src, opener = data.load("train")
    train_src = train_subset(full_src, recipe)
    num_classes = len(full_src.class_names or [])
    model = TSN(encoder.backbone, encoder.backbone.feature_dim, num_classes, recipe.dropout).to(ctx.device)
    losses = _train(model, encoder, train_src, opener, recipe, num_workers, ctx)
    report = _evaluate(model, encoder, data, recipe, num_workers, ctx, num_classes)
    return {**report, "train_loss_first": float(np.mean(losses[:5])), "train_loss_last": float(np.mean(losses[-5:])),
            "recipe": asdict(recipe), "world_size": ctx.world_size, "n_train_full": len(full_src.records),
            "subset": [(r.path, r.label) for r in train_src.records]}


def _autocast(recipe: FinetuneRecipe, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=recipe.amp and device.type == "cuda")


def _train(model: TSN, encoder: Encoder, train_src: VideoSource, opener, recipe: FinetuneRecipe,
           num_workers: int, ctx: DistContext) -> list[float]:
    is3d = encoder.backbone.kind == "3d"
    p_flip = flip_default(train_src.layout) if recipe.flip is None else recipe.flip
    p_flip = 0.0 if recipe.mirror else p_flip  # the loop flips, knowing the labels
    mirror_of = mirror_classes(list(train_src.class_names or []))
    aug = ClipAugment(size=encoder.input_size, scale=(0.3, 1.0), p_jitter=0.0, p_gray=0.0, p_blur=0.0,
                      p_flip=p_flip, shared_crop=True, mean=encoder.mean, std=encoder.std)
    train_ds = VideoDataset(train_src, TSNSampler(recipe.segments, recipe.clip_len), aug, opener,
                            layout="clip" if is3d else "frame", seed=recipe.seed)
    # a 1% subset may hold fewer videos than a batch: then each step takes them all
    batch = max(1, min(recipe.batch_size, len(train_ds)) // ctx.world_size)
    sampler = DistributedSampler(train_ds, ctx.world_size, ctx.rank, seed=recipe.seed, drop_last=True) \
        if ctx.distributed else None
    net = DDP(model) if ctx.distributed else model
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    per_epoch = max(len(train_ds) // ctx.world_size // batch, 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, per_epoch * recipe.epochs)
    losses = []
    model.train()
    progress = Progress(f"fine-tuning {encoder.name}", per_epoch * recipe.epochs, "steps", enabled=ctx.is_main)
    for epoch in range(recipe.epochs):
        train_ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(recipe.seed * 1000 + epoch + 7919 * ctx.rank)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(train_ds, batch_size=batch, shuffle=sampler is None,
                            sampler=sampler, drop_last=True, num_workers=num_workers, generator=g,
                            collate_fn=collate_samples)
        for item in loader:
            views, labels = item["views"], item["label"]
            if recipe.mirror:
                views, labels = mirror_batch(views, labels, mirror_of, g)
            with _autocast(recipe, ctx.device):
                logits = net([v.to(ctx.device) for v in views])
            loss = F.cross_entropy(logits.float(), labels.to(ctx.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            progress.update()
    return losses


def _evaluate(model: TSN, encoder: Encoder, data: EvalData, recipe: FinetuneRecipe, num_workers: int,
              ctx: DistContext, num_classes: int) -> dict:
    """Test-split metrics; each rank scores every ``world_size``-th video and the scores are gathered."""
    is3d = encoder.backbone.kind == "3d"
    test_src, test_opener = data.load("test")
    protocol = Protocol("clips" if is3d else "frames", recipe.test_views, recipe.clip_len, crops=recipe.test_crops,
                        crop=encoder.input_size)
    test_ds = EvalClips(test_src, test_opener, protocol, encoder.mean, encoder.std)
    mine = Subset(test_ds, range(ctx.rank, len(test_ds), ctx.world_size))
    model.eval()
    scores, labels = [torch.zeros(0, num_classes)], [torch.zeros(0, dtype=torch.long)]
    with torch.no_grad():
        for batch in DataLoader(mine, batch_size=max(recipe.batch_size // ctx.world_size, 1),
                                num_workers=num_workers):
            ok = batch["ok"]
            x = batch["views"][ok].to(ctx.device)  # (B, V, T, C, H, W)
            if not len(x):
                continue
            views = [x[:, v].permute(0, 2, 1, 3, 4) if is3d else x[:, v, 0] for v in range(x.shape[1])]
            with _autocast(recipe, ctx.device):
                scores.append(model(views).float().softmax(1).cpu())
            labels.append(torch.tensor([test_src.records[i].label for i in batch["index"][ok].tolist()]))
    scores, labels = torch.cat(scores), torch.cat(labels)
    if ctx.distributed:
        parts: list = [None] * ctx.world_size
        dist.all_gather_object(parts, (scores, labels))
        scores, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return classification_report(scores, labels, num_classes)
