"""SeCo: sequence contrastive learning (Yao et al., AAAI 2021; DESIGN.md §3).

Per video: an anchor frame and two other frames (SeCoTripletSampler). The query is one view of the
anchor through the online encoder; the keys are a second view of the anchor and one view of each
other frame through the momentum encoder (shuffle-BN). Losses (eq. 5): L = L_inter + L_intra + L_order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.samplers import SeCoTripletSampler
from vidssl.losses import order_cross_entropy, seco_inter_loss, seco_intra_loss, sum_parts
from vidssl.models.backbones import Backbone
from vidssl.models.heads import ParallelHeads, check_head_hidden
from vidssl.modules.momentum import ema_update_, momentum_copy
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation
from vidssl.modules.views import cat_views

SECO_LOSSES = ("inter", "intra", "order")


@dataclass
class SeCoConfig:
    """``losses`` selects the paper's ablation rows: ``[inter]``, ``[inter, intra]``,
    ``[inter, intra, order]`` (the full method)."""

    losses: list[str] = field(default_factory=lambda: ["inter", "intra", "order"])
    tau: float = 0.1
    queue_size: int = 256  # paper: 131072 (Kinetics); keep it below one epoch of keys (3 per video)
    momentum: float = 0.99  # paper: 0.999
    head_hidden: int | None = None  # None: the backbone's feature size, the paper's ratio (2048 on R50's 2048)
    head_dim: int = 128
    shuffle_bn_splits: int = 2  # single-process emulation of per-GPU BN; ignored under DDP

    def validate(self) -> None:
        bad = [x for x in self.losses if x not in SECO_LOSSES]
        if bad or "inter" not in self.losses:
            raise ValueError(f"seco.losses must include 'inter' and be drawn from {SECO_LOSSES}, got {self.losses}")
        check_head_hidden("seco", self.head_hidden)


class KeyEncoder(nn.Module):
    """Backbone plus one projection head per loss; the online and momentum encoders share this shape."""

    def __init__(self, backbone: Backbone, heads: ParallelHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every head's output, L2-normalised: ``(B, heads, head_dim)``."""
        return self.project(self.backbone(x))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The heads on backbone features ``(B, D)``. The heads have no BatchNorm, so the key side
        runs them once after shuffle-BN's backbone passes."""
        return F.normalize(self.heads(h), dim=-1)

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.heads.names, z.unbind(1), strict=True))


class SeCo(nn.Module):
    config_class = SeCoConfig

    def __init__(self, cfg: SeCoConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.distributed = distributed
        hidden = cfg.head_hidden or backbone.feature_dim
        self.encoder_q = KeyEncoder(backbone, ParallelHeads(cfg.losses, backbone.feature_dim, hidden, cfg.head_dim))
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)
        if "order" in cfg.losses:
            self.order_classifier = nn.Linear(3 * cfg.head_dim, 2)

    @property
    def backbone(self) -> Backbone:
        return self.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: SeCoConfig) -> dict:
        """Sampler, augmented copies per sampled view (two of the anchor), tensor layout, and the
        keys each video adds to the queue per step."""
        return {"sampler": SeCoTripletSampler(), "repeat": (2, 1, 1), "layout": "frame",
                "queue_keys": {"queue_size": 3}}

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        anchor_q, anchor_k, frame2, frame3 = views
        # the host's work first (a compiled step breaks here, before its graph): the shuffle, the queue
        perm = shuffle_permutation(3 * len(anchor_k), self.distributed, generator, anchor_k.device)
        queue = self.queue.snapshot()
        q = self.encoder_q.split(self.encoder_q(anchor_q))
        with torch.no_grad():
            ema_update_(self.encoder_k, self.encoder_q, self.cfg.momentum)
            hk = shuffle_bn_forward(self.encoder_k.backbone, cat_views([anchor_k, frame2, frame3]), perm,
                                    self.distributed, self.cfg.shuffle_bn_splits)
            # each head's keys (3, B, d): the anchor's second view, the second frame, the third
            zk = self.encoder_k.split(self.encoder_k.project(hk))
            k = {name: z.view(3, -1, z.shape[-1]) for name, z in zk.items()}
        parts = {"inter": seco_inter_loss(q["inter"], k["inter"], queue, self.cfg.tau)}
        if "intra" in q:
            parts["intra"] = seco_intra_loss(q["intra"], k["intra"][0], k["intra"][1:], self.cfg.tau)
        if "order" in q:
            features = torch.cat([q["order"], k["order"][1], k["order"][2]], dim=1)
            parts["order"] = order_cross_entropy(self.order_classifier(features), info["order"])
        self.queue.enqueue(k["inter"].flatten(0, 1), gather=self.distributed)
        return sum_parts(parts), parts
