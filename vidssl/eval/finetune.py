"""TSN-style full fine-tuning (VCLR/SeCo protocol; Wang et al. 2016).

Recipe: ``segments`` equal segments, one frame (2D) or clip (3D) at a random position in each;
one random resized crop (scale 0.3-1) and horizontal flip for all of a sample's segments (TSN's
group crop), the flip off by default where labels name a direction (``flip_default``: SSv2, the
built-in motion classes); backbone + dropout + linear classifier;
segment logits averaged (mean consensus); cross-entropy; SGD momentum 0.9, weight decay 5e-4,
cosine lr over ``epochs``. Test: ``test_views`` uniformly spaced frames/clips, centre crop, logits
averaged. From random init this is the *supervised from scratch* ceiling.
"""

from __future__ import annotations

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

    def describe(self) -> str:
        flip = "default flip" if self.flip is None else f"flip p {self.flip}"
        return (f"TSN {self.segments} segments x {self.clip_len} frame(s), mean consensus, {flip}; SGD lr {self.lr} "
                f"cosine, wd {self.weight_decay}, {self.epochs} epochs, batch {self.batch_size}; "
                f"test {self.test_views} uniform views averaged")


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
            views = [v.to(device) for v in batch["views"]]
            loss = F.cross_entropy(model(views), batch["label"].to(device))
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
