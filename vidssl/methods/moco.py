"""MoCo-v2 on frames: the baseline SeCo is measured against (= SeCo-Inter with one positive).

Two views of one random frame; query through the online encoder, key through the momentum encoder
(shuffle-BN); InfoNCE against the queue (MoCo eq. 1 / SeCo eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidssl.data.samplers import RandomClipsSampler
from vidssl.losses import info_nce
from vidssl.methods.seco import KeyEncoder
from vidssl.models.backbones import Backbone
from vidssl.models.heads import ParallelHeads, check_head_hidden
from vidssl.modules.momentum import ema_update_, momentum_copy
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation


@dataclass
class MoCoConfig:
    tau: float = 0.2
    queue_size: int = 96  # MoCo-v2: 65536; keep it below one epoch of keys (1 per video)
    momentum: float = 0.99  # MoCo-v2: 0.999
    head_hidden: int | None = None  # None: the backbone's feature size, MoCo-v2's ratio (2048 on R50's 2048)
    head_dim: int = 128
    shuffle_bn_splits: int = 2

    def validate(self) -> None:
        check_head_hidden("moco", self.head_hidden)


class MoCoV2(nn.Module):
    config_class = MoCoConfig

    def __init__(self, cfg: MoCoConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.distributed = distributed
        head = ParallelHeads(["proj"], backbone.feature_dim, cfg.head_hidden or backbone.feature_dim, cfg.head_dim)
        self.encoder_q = KeyEncoder(backbone, head)
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)

    @property
    def backbone(self) -> Backbone:
        return self.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: MoCoConfig) -> dict:
        return {"sampler": RandomClipsSampler(num_clips=1, clip_len=1), "repeat": (2,), "layout": "frame",
                "queue_keys": {"queue_size": 1}}

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view_q, view_k = views
        # the host's work first (a compiled step breaks here, before its graph): the shuffle, the queue
        perm = shuffle_permutation(len(view_k), self.distributed, generator, view_k.device)
        queue = self.queue.snapshot()
        q = self.encoder_q(view_q)[:, 0]
        with torch.no_grad():
            ema_update_(self.encoder_k, self.encoder_q, self.cfg.momentum)
            hk = shuffle_bn_forward(self.encoder_k.backbone, view_k, perm, self.distributed, self.cfg.shuffle_bn_splits)
            k = self.encoder_k.project(hk)[:, 0]
        loss = info_nce(q, k, queue, self.cfg.tau)
        self.queue.enqueue(k, gather=self.distributed)
        return loss, {"infonce": loss}
