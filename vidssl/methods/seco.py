"""SeCo: sequence contrastive learning (Yao et al., AAAI 2021; docs/methods.md).

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
from vidssl.losses import seco_inter_loss, seco_intra_loss
from vidssl.methods.base import DataSpec, Method, accuracy
from vidssl.models.backbones import Backbone
from vidssl.models.heads import MultiHeadEncoder
from vidssl.modules.momentum import MomentumConfig, MomentumEncoders
from vidssl.modules.queue import KeyQueue

SECO_LOSSES = ("inter", "intra", "order")


@dataclass
class SeCoConfig(MomentumConfig):
    """``losses`` selects the paper's ablation rows: ``[inter]``, ``[inter, intra]``,
    ``[inter, intra, order]`` (the full method). ``queue_size``: paper 131072 (Kinetics); 3 keys
    per video."""

    losses: list[str] = field(default_factory=lambda: ["inter", "intra", "order"])

    def validate(self) -> None:
        bad = [x for x in self.losses if x not in SECO_LOSSES]
        if bad or "inter" not in self.losses:
            raise ValueError(f"seco.losses must include 'inter' and be drawn from {SECO_LOSSES}, got {self.losses}")
        super().validate()


class SeCo(Method):
    Config = SeCoConfig

    def __init__(self, cfg: SeCoConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, distributed)
        encoder = MultiHeadEncoder(backbone, cfg.losses, cfg.head_hidden or backbone.feature_dim, cfg.head_dim)
        self.encoders = MomentumEncoders(encoder, cfg.momentum, cfg.shuffle_bn_splits, distributed)
        self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)
        if "order" in cfg.losses:
            self.order_classifier = nn.Linear(3 * cfg.head_dim, 2)

    @property
    def backbone(self) -> Backbone:
        return self.encoders.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: SeCoConfig) -> DataSpec:
        """Two views of the anchor, one of each other frame; three keys per video enter the queue."""
        return DataSpec(SeCoTripletSampler(), "frame", repeat=(2, 1, 1), queue_keys={"queue_size": 3})

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        anchor_q, anchor_k, frame2, frame3 = views
        # the host's work first, so that a compiled step is one graph: the shuffle, the queue's copy
        perm = self.encoders.key_permutation(3 * len(anchor_k), generator, anchor_k.device)
        queue = self.queue.snapshot()
        encoder_q, encoder_k = self.encoders.encoder_q, self.encoders.encoder_k
        q = encoder_q.project(encoder_q.backbone(anchor_q))
        hk = self.encoders.key_features(torch.cat([anchor_k, frame2, frame3]), perm)
        # each head's keys (3, B, d): the anchor's second view, the second frame, the third
        k = {name: z.detach().view(3, -1, z.shape[-1]) for name, z in encoder_k.project(hk).items()}
        parts = {"inter": seco_inter_loss(q["inter"], k["inter"], queue, self.cfg.tau)}
        if "intra" in q:
            parts["intra"] = seco_intra_loss(q["intra"], k["intra"][0], k["intra"][1:], self.cfg.tau)
        if "order" in q:
            # label 0: the anchor precedes the two other frames (SeCoTripletSampler)
            features = torch.cat([q["order"], k["order"][1], k["order"][2]], dim=1)
            logits = self.order_classifier(features).float()
            parts["order"] = F.cross_entropy(logits, info["order"])
        self.queue.enqueue(k["inter"].flatten(0, 1), gather=self.distributed)
        loss = sum(parts.values())
        if "order" in q:
            parts["order_acc"] = accuracy(logits, info["order"])
        return loss, parts
