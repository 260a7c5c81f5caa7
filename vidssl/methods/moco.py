"""MoCo-v2 on frames: the baseline SeCo is measured against (= SeCo-Inter with one positive).

Two views of one random frame; query through the online encoder, key through the momentum encoder
(shuffle-BN); InfoNCE against the queue (MoCo eq. 1 / SeCo eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidssl.data.samplers import RandomClipsSampler
from vidssl.losses import info_nce
from vidssl.methods.base import DataSpec, Method
from vidssl.models.backbones import Backbone
from vidssl.models.heads import MultiHeadEncoder
from vidssl.modules.momentum import MomentumConfig, MomentumEncoders
from vidssl.modules.queue import KeyQueue


@dataclass
class MoCoConfig(MomentumConfig):
    tau: float = 0.2
    queue_size: int = 96  # MoCo-v2: 65536; keep it below one epoch of keys (1 per video)


class MoCoV2(Method):
    Config = MoCoConfig

    def __init__(self, cfg: MoCoConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, distributed)
        encoder = MultiHeadEncoder(backbone, ["proj"], cfg.head_hidden or backbone.feature_dim, cfg.head_dim)
        self.encoders = MomentumEncoders(encoder, cfg.momentum, cfg.shuffle_bn_splits, distributed)
        self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)

    @property
    def backbone(self) -> Backbone:
        return self.encoders.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: MoCoConfig) -> DataSpec:
        return DataSpec(RandomClipsSampler(num_clips=1, clip_len=1), "frame", repeat=(2,),
                        queue_keys={"queue_size": 1})

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view_q, view_k = views
        # the host's work first, so that a compiled step is one graph: the shuffle, the queue's copy
        perm = self.encoders.key_permutation(len(view_k), generator, view_k.device)
        queue = self.queue.snapshot()
        encoder_q, encoder_k = self.encoders.encoder_q, self.encoders.encoder_k
        q = encoder_q.project(encoder_q.backbone(view_q))["proj"]
        k = encoder_k.project(self.encoders.key_features(view_k, perm))["proj"]
        loss = info_nce(q, k, queue, self.cfg.tau)
        self.queue.enqueue(k, gather=self.distributed)
        return loss, {"infonce": loss}


