"""SiamFC (Bertinetto et al., ECCV-W 2016) on a frozen encoder: SeCo's "pre-trained representation +
linear model" tracking protocol (SeCo Sec. 4, Fig. 3c).

The encoder runs at output stride 8 (``set_output_stride``: weights unchanged) and stays frozen;
only a 1x1 convolution on its ``layer4`` map is trained. An exemplar crop around the target and a
search crop around its last position go through encoder and 1x1 convolution; the exemplar map,
used as a correlation kernel over the search map, gives a score map (``SiamFCHead``).
Training: pairs of frames of one sequence at most ``max_gap`` apart, logistic loss on a
ball-shaped label (positive within ``r_pos`` px of the target, in search-crop pixels), positives
and negatives weighted half each. Tracking: the search crop at 3 scales, the score maps upsampled
x16 (bicubic), non-centre scales penalised, a cosine window mixed in, the peak moves the target;
its size follows the winning scale with damping.

Constants (``SiamFCConfig``): crop sizes 127/255, context 0.5, ``r_pos`` 16, stride 8, 3 scales,
upsampling 16 and window influence 0.176 are the SiamFC paper's; the scale step 1.0375, scale
penalty 0.9745 and scale damping 0.59 are those of its released tracker (as siamfc-pytorch uses
them); SGD momentum 0.9, weight decay 5e-4, batch 8, frame gap up to 100, stretch 0.05 and shift
8 px are SiamFC's training settings. Its learning rate falls from 1e-2 to 1e-5 over 50 GOT-10k
epochs (~330k steps); for the few hundred steps of a laptop run the default is 0.1 to 1e-3 (a
linear head converges fast), and ``lr``/``lr_end``/``steps`` give SiamFC's schedule back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.eval.encoders import Encoder
from vidssl.eval.progress import Progress
from vidssl.eval.track_data import Sequence
from vidssl.models.backbones import set_output_stride

STRIDE = 8


@dataclass(frozen=True)
class SiamFCConfig:
    exemplar_size: int = 127
    instance_size: int = 255
    level: str = "high"  # the encoder map the head reads: high (SeCo) or mid
    context: float = 0.5
    head_dim: int = 256
    r_pos: float = 16.0
    steps: int = 400
    batch_size: int = 8
    lr: float = 0.1
    lr_end: float = 1e-3
    weight_decay: float = 5e-4
    max_gap: int = 100
    stretch: float = 0.05
    shift: float = 8.0
    scale_num: int = 3
    scale_step: float = 1.0375
    scale_penalty: float = 0.9745
    scale_lr: float = 0.59
    window_influence: float = 0.176
    response_up: int = 16
    seed: int = 0

    def describe(self) -> str:
        return (f"SiamFC on frozen {self.level} features at stride 8, 1x1 conv to {self.head_dim}; "
                f"crops {self.exemplar_size}/{self.instance_size}; {self.steps} steps x {self.batch_size} pairs, "
                f"lr {self.lr}->{self.lr_end}; {self.scale_num} scales x{self.scale_step}")


class FrozenFeatures(nn.Module):
    """The encoder at output stride 8, in eval mode, without gradients: frames ``(B, 3, H, W)``
    in [0, 255] to the maps of ``level`` (SeCo: ``high``, the last stage; ``mid`` is the stage
    before it, which ResNet-based Siamese trackers after SiamFC prefer)."""

    def __init__(self, encoder: Encoder, level: str = "high") -> None:
        super().__init__()
        if level not in ("high", "mid"):
            raise ValueError(f"tracking reads the high or mid level (stride 8), not {level!r}")
        if encoder.backbone.kind != "2d":
            raise ValueError(f"tracking takes a frame (2D) encoder, {encoder.backbone.arch} is 3D")
        self.backbone = set_output_stride(encoder.backbone).eval().requires_grad_(False)
        self.register_buffer("mean", 255 * torch.tensor(encoder.mean).view(1, 3, 1, 1))
        self.register_buffer("std", 255 * torch.tensor(encoder.std).view(1, 3, 1, 1))
        self.level = level
        self.channels = encoder.backbone.level_channels[level]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Crops (made on the CPU) go to the encoder's device here."""
        return self.backbone.forward_levels((x.to(self.mean.device) - self.mean) / self.std)[self.level]


class SiamFCHead(nn.Module):
    """The trained part: a 1x1 convolution shared by both branches, and SiamFC's "adjust" of the
    score map (a learnt gain and bias).

    Frozen features differ in scale from encoder to encoder, and one learning rate must fit them
    all: the 1x1 convolution's output is batch-normalised (a per-channel affine map after a 1x1
    convolution is again a 1x1 convolution: it folds into it at test time) and the correlation is
    divided by the exemplar map's size, so the scores start as a correlation of unit-variance
    channels whatever the encoder (SiamFC's fixed ``0.001`` suits only its own AlexNet)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, dim, 1), nn.BatchNorm2d(dim))
        self.gain = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score maps ``(B, 1, R, R)`` of exemplar features ``z`` over search features ``x``."""
        z, x = self.proj(z), self.proj(x)
        b, c, h, w = x.shape
        scores = F.conv2d(x.reshape(1, b * c, h, w), z, groups=b) / z[0].numel()
        return scores.view(b, 1, *scores.shape[-2:]) * self.gain + self.bias


def crop(image: torch.Tensor, cy: float, cx: float, side: float, out: int) -> torch.Tensor:
    """The square of ``side`` image pixels centred at ``(cy, cx)`` resized to ``out`` (bilinear),
    ``(3, out, out)`` float; outside the image it takes the image's mean colour (SiamFC)."""
    image = image.float()
    h, w = image.shape[-2:]
    fill = image.mean((1, 2), keepdim=True)
    pos = (torch.arange(out, dtype=torch.float32) + 0.5) * side / out - side / 2
    gx, gy = 2 * (cx + pos) / w - 1, 2 * (cy + pos) / h - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample((image - fill)[None], grid, align_corners=False)[0] + fill


def context_side(w: float, h: float, context: float) -> float:
    """SiamFC's exemplar region: the box padded by ``context * (w + h)``, as a square of equal area."""
    p = context * (w + h)
    return math.sqrt((w + p) * (h + p))


def ball_labels(size: int, dy: torch.Tensor, dx: torch.Tensor, r_pos: float) -> torch.Tensor:
    """``(B, 1, size, size)`` maps: 1 within ``r_pos / STRIDE`` cells of each target cell (the centre
    moved by ``(dy, dx)`` search-crop pixels), else 0."""
    cells = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    ry = cells.view(1, -1, 1) - (dy / STRIDE).view(-1, 1, 1)
    rx = cells.view(1, 1, -1) - (dx / STRIDE).view(-1, 1, 1)
    return ((ry ** 2 + rx ** 2).sqrt() <= r_pos / STRIDE).float()[:, None]


def balanced_logistic_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SiamFC's loss: mean logistic loss of the positives and of the negatives, averaged."""
    pos = labels.sum((1, 2, 3), keepdim=True).clamp_min(1)
    neg = (1 - labels).sum((1, 2, 3), keepdim=True).clamp_min(1)
    weight = torch.where(labels > 0, 0.5 / pos, 0.5 / neg)
    return F.binary_cross_entropy_with_logits(scores, labels, weight, reduction="sum") / len(scores)


def _pairs(sequences: list[Sequence], n: int, max_gap: int, g: np.random.Generator) -> list[tuple[Sequence, int, int]]:
    usable = [s for s in sequences if s.visible.sum() >= 2]
    if not usable:
        raise ValueError("tracking training needs a sequence with two frames that have boxes")
    out = []
    for _ in range(n):
        seq = usable[int(g.integers(len(usable)))]
        frames = np.flatnonzero(seq.visible)
        i = int(frames[g.integers(len(frames))])
        near = frames[np.abs(frames - i) <= max_gap]
        out.append((seq, i, int(near[g.integers(len(near))])))
    return out


def training_batch(pairs: list[tuple[Sequence, int, int]], cfg: SiamFCConfig,
                   g: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exemplar crops, search crops (stretched and shifted at random) and their label maps."""
    zs, xs, shifts = [], [], []
    for seq, i, j in pairs:
        x, y, w, h = seq.boxes[i]
        side = context_side(w, h, cfg.context)
        zs.append(crop(seq.read(i), y + h / 2, x + w / 2, side, cfg.exemplar_size))
        x, y, w, h = seq.boxes[j]
        side = context_side(w, h, cfg.context) * cfg.instance_size / cfg.exemplar_size
        side *= 1 + float(g.uniform(-cfg.stretch, cfg.stretch))
        sy, sx = g.uniform(-cfg.shift, cfg.shift, 2)  # the target's offset from the crop centre, crop px
        scale = side / cfg.instance_size
        xs.append(crop(seq.read(j), y + h / 2 - sy * scale, x + w / 2 - sx * scale, side, cfg.instance_size))
        shifts.append((sy, sx))
    shift = torch.tensor(shifts, dtype=torch.float32)
    return torch.stack(zs), torch.stack(xs), shift


def train_head(features: FrozenFeatures, sequences: list[Sequence], cfg: SiamFCConfig,
               label: str = "") -> tuple[SiamFCHead, list[float]]:
    """Train the 1x1 head on ``sequences``; the per-step losses come back with it."""
    torch.manual_seed(cfg.seed)
    g = np.random.default_rng(cfg.seed)
    head = SiamFCHead(features.channels, cfg.head_dim).to(features.mean.device)
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (cfg.lr_end / cfg.lr) ** (1 / max(cfg.steps, 1)))
    losses = []
    progress = Progress(f"training the SiamFC head of {label}", cfg.steps, "steps")
    for _ in range(cfg.steps):
        z, x, shift = training_batch(_pairs(sequences, cfg.batch_size, cfg.max_gap, g), cfg, g)
        scores = head(features(z), features(x))
        labels = ball_labels(scores.shape[-1], shift[:, 0], shift[:, 1], cfg.r_pos).to(scores.device)
        loss = balanced_logistic_loss(scores, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        progress.update()
    return head.eval(), losses


class Tracker:
    """SiamFC's tracking loop on one sequence: ``init`` with the first box, then ``update`` per frame."""

    def __init__(self, features: FrozenFeatures, head: SiamFCHead, cfg: SiamFCConfig) -> None:
        self.features, self.head, self.cfg = features, head, cfg
        n = cfg.scale_num
        self.scales = cfg.scale_step ** (np.arange(n) - (n - 1) / 2)

    @torch.no_grad()
    def init(self, image: torch.Tensor, box: np.ndarray) -> None:
        x, y, w, h = (float(v) for v in box)
        self.center, self.size = np.array([y + h / 2, x + w / 2]), np.array([h, w])
        self.z_side = context_side(w, h, self.cfg.context)
        self.x_side = self.z_side * self.cfg.instance_size / self.cfg.exemplar_size
        self.kernel = self.features(crop(image, *self.center, self.z_side, self.cfg.exemplar_size)[None])

    @torch.no_grad()
    def update(self, image: torch.Tensor) -> np.ndarray:
        cfg = self.cfg
        crops = torch.stack([crop(image, *self.center, self.x_side * s, cfg.instance_size) for s in self.scales])
        maps = self.head(self.kernel.expand(len(crops), -1, -1, -1), self.features(crops))
        up = cfg.response_up * maps.shape[-1]
        maps = F.interpolate(maps, size=(up, up), mode="bicubic", align_corners=False)[:, 0].cpu().numpy()
        maps[np.arange(len(maps)) != len(maps) // 2] *= cfg.scale_penalty
        best = int(maps.reshape(len(maps), -1).max(1).argmax())
        response = maps[best] - maps[best].min()
        response /= response.sum() + 1e-16
        window = np.outer(np.hanning(up), np.hanning(up))
        response = (1 - cfg.window_influence) * response + cfg.window_influence * window / window.sum()
        peak = np.array(np.unravel_index(response.argmax(), response.shape), dtype=np.float64)
        moved = (peak - (up - 1) / 2) * STRIDE / cfg.response_up  # search-crop pixels
        self.center = self.center + moved * self.x_side * self.scales[best] / cfg.instance_size
        self.center = np.clip(self.center, 0, image.shape[-2:])  # a lost target is looked for in the frame
        change = (1 - cfg.scale_lr) + cfg.scale_lr * self.scales[best]
        self.size, self.z_side, self.x_side = self.size * change, self.z_side * change, self.x_side * change
        h, w = self.size
        return np.array([self.center[1] - w / 2, self.center[0] - h / 2, w, h])


def track(tracker: Tracker, seq: Sequence) -> np.ndarray:
    """One-pass evaluation's run: start from the first box, predict every later frame."""
    start = int(np.flatnonzero(seq.visible)[0])
    pred = np.zeros_like(seq.boxes)
    pred[:start + 1] = seq.boxes[start]
    tracker.init(seq.read(start), seq.boxes[start])
    for t in range(start + 1, len(seq)):
        pred[t] = tracker.update(seq.read(t))
    return pred

