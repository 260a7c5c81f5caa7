"""VCLR: video-level contrastive learning (Kuang et al., ICCV 2021; docs/methods.md).

Per video, N segments and two distinct frames (or clips) per segment: a query tuple and a key
tuple. Four losses, weights 1 (the official code; SeCo's 2-way order is dropped):

- ``video``: InfoNCE between the query tuple's and the key tuple's embeddings (mean of the frame
  features → video head → L2 norm) against a second queue of key-tuple embeddings.
- ``inter`` / ``intra``: SeCo's losses on an anchor taken from the query tuple (its first or last
  element) with a second view of the anchor and the key tuple's elements of the other segments.
- ``order``: each tuple is shuffled with probability 1/2 by a permutation that is neither the
  identity nor the reversal; a Linear(2·N·d → 4) on the concatenated per-frame order features
  predicts both ordered / query shuffled / key shuffled / both shuffled. Order features are
  L2-normalised per frame vector (the official code normalises over the frame axis, a quirk).

With ``clip_len > 1`` every tuple element is a clip and the backbone a 3D one (the official code
is frame-only).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.samplers import VCLRSampler
from vidssl.losses import info_nce, seco_inter_loss, seco_intra_loss
from vidssl.methods.base import DataSpec, Method, accuracy
from vidssl.models.backbones import Backbone
from vidssl.models.heads import MultiHeadEncoder
from vidssl.modules.device import host_to_device
from vidssl.modules.momentum import MomentumConfig, MomentumEncoders
from vidssl.modules.queue import KeyQueue

VCLR_LOSSES = ("video", "inter", "intra", "order")


@dataclass
class VCLRConfig(MomentumConfig):
    """``losses`` selects the rows of the paper's Table 6; ``num_segments`` its Table 7 (N = 1..5;
    the order loss needs N >= 3). ``queue_size``: frame keys for inter (paper: 131072)."""

    losses: list[str] = field(default_factory=lambda: ["video", "inter", "intra", "order"])
    num_segments: int = 3
    clip_len: int = 1  # > 1: one clip per segment (3D backbones)
    dilation: int = 1
    video_queue_size: int = 128  # key-tuple embeddings; paper: 65536

    def validate(self) -> None:
        bad = [x for x in self.losses if x not in VCLR_LOSSES]
        if bad or not self.losses:
            raise ValueError(f"vclr.losses must be a non-empty subset of {VCLR_LOSSES}, got {self.losses}")
        if not 1 <= self.num_segments <= 16:
            raise ValueError(f"vclr.num_segments must be in 1..16, got {self.num_segments}")
        if "order" in self.losses and self.num_segments < 3:
            raise ValueError("vclr.losses: 'order' needs num_segments >= 3 (with fewer, every "
                             "permutation is the identity or the reversal)")
        if ("inter" in self.losses or "intra" in self.losses) and self.num_segments < 2:
            raise ValueError("vclr.losses: 'inter'/'intra' need num_segments >= 2 (frames of other segments)")
        super().validate()


def shuffling_permutations(n: int) -> torch.Tensor:
    """All permutations of ``n`` elements that are neither the identity nor the reversal."""
    identity, reversal = tuple(range(n)), tuple(reversed(range(n)))
    perms = [p for p in itertools.permutations(range(n)) if p not in (identity, reversal)]
    return torch.tensor(perms, dtype=torch.long).view(-1, n)


@functools.cache
def _tuple_orders(n: int) -> torch.Tensor:
    """The orders a tuple of ``n`` can take in the order task: row 0 the identity, row ``1 + i`` the
    ``i``-th of :func:`shuffling_permutations`."""
    return torch.cat([torch.arange(n)[None], shuffling_permutations(n)])


@torch.compiler.disable
def draw_tuple_shuffles(draws: int, b: int, n: int, generator: torch.Generator | None,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` independent shuffles of ``b`` tuples of ``n`` segments for the 4-way order task:
    each tuple keeps its order or, with probability 1/2, takes a random permutation that is neither
    the identity nor the reversal. Returns the orders ``(draws, B, N)`` and the 0/1 shuffled flags
    ``(draws, B)`` on ``device``. Drawn on the host from the step's generator, draw after draw, the
    flags before the permutations."""
    table = _tuple_orders(n)
    flags, choices = [], []
    for _ in range(draws):
        flags.append(torch.randint(0, 2, (b,), generator=generator))
        choices.append(torch.randint(0, len(table) - 1, (b,), generator=generator))
    flags = torch.stack(flags)
    rows = (torch.stack(choices) + 1) * flags  # 0 (kept) or 1 + the permutation drawn
    return host_to_device(table[rows], device), host_to_device(flags, device)


def shuffle_tuples(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Each row's tuple ``x[b]`` (``(B, N, D)``) in the order ``order[b]`` (``(B, N)``)."""
    return torch.gather(x, 1, order[..., None].expand_as(x))


def anchor_and_keys(zq: torch.Tensor, zk: torch.Tensor,
                    last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SeCo's anchor inside VCLR: from one head's query tuple ``zq`` ``(N, B, d)`` and key side
    ``zk`` ``(N + 1, B, d)`` (the key tuple, then the anchor's second view), the query (the query
    tuple's first element, or its last where ``last`` ``(B,)``), the anchor's key, and the key
    tuple's other segments in temporal order ``(N - 1, B, d)``."""
    n, last = len(zq), last[:, None]
    query = torch.where(last, zq[n - 1], zq[0])
    others = torch.where(last, zk[:n - 1], zk[1:n])
    return query, zk[n], others


class VCLR(Method):
    Config = VCLRConfig

    def __init__(self, cfg: VCLRConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, distributed)
        want = "2d" if cfg.clip_len == 1 else "3d"
        if backbone.kind != want:
            raise ValueError(f"vclr.clip_len={cfg.clip_len} needs a {want} backbone, got {backbone.arch}")
        # one head per loss on frame features; "video" embeds the mean over a tuple's frames
        encoder = MultiHeadEncoder(backbone, cfg.losses, cfg.head_hidden or backbone.feature_dim, cfg.head_dim)
        self.encoders = MomentumEncoders(encoder, cfg.momentum, cfg.shuffle_bn_splits, distributed)
        if "inter" in cfg.losses:
            self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)
        if "video" in cfg.losses:
            self.video_queue = KeyQueue(cfg.video_queue_size, cfg.head_dim, seed=1)
        if "order" in cfg.losses:
            self.order_classifier = nn.Linear(2 * cfg.num_segments * cfg.head_dim, 4)

    @property
    def backbone(self) -> Backbone:
        return self.encoders.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: VCLRConfig) -> DataSpec:
        return DataSpec(VCLRSampler(cfg.num_segments, cfg.clip_len, cfg.dilation),
                        "frame" if cfg.clip_len == 1 else "clip",
                        queue_keys={"queue_size": cfg.num_segments, "video_queue_size": 1})

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n, b, losses = self.cfg.num_segments, views[0].shape[0], self.cfg.losses
        device = views[0].device
        # the host's work first, so that a compiled step is one graph: the key batch's shuffle, the
        # order task's tuple shuffles (the query's, the key's), the queues' copies
        perm = self.encoders.key_permutation((n + 1) * b, generator, device)
        shuffles = draw_tuple_shuffles(2, b, n, generator, device) if "order" in losses else None
        queue = self.queue.snapshot() if "inter" in losses else None
        video_queue = self.video_queue.snapshot() if "video" in losses else None
        frame_heads = [name for name in losses if name != "video"]
        encoder_q, encoder_k = self.encoders.encoder_q, self.encoders.encoder_k
        # views: the query tuple q_1..q_N, the key tuple k_1..k_N, the anchor's second view;
        # features segment by segment, (N, B, D) and (N + 1, B, D)
        hq = encoder_q.backbone(torch.cat(views[:n])).view(n, b, -1)
        hk = self.encoders.key_features(torch.cat(views[n:]), perm).view(n + 1, b, -1)
        zq = encoder_q.project(hq, frame_heads)  # each (N, B, d)
        zk = encoder_k.project(hk, frame_heads)  # each (N + 1, B, d): the key tuple, then the anchor
        parts: dict[str, torch.Tensor] = {}
        if "video" in losses:
            video_q = F.normalize(encoder_q.heads["video"](hq.mean(0)), dim=-1)
            video_k = F.normalize(encoder_k.heads["video"](hk[:n].mean(0)), dim=-1)
            parts["video"] = info_nce(video_q, video_k, video_queue, self.cfg.tau)
            self.video_queue.enqueue(video_k, gather=self.distributed)
        last = info["anchor_last"].bool()
        if "inter" in losses:  # positives: the anchor's second view and the other segments' frames
            query, anchor_k, others = anchor_and_keys(zq["inter"], zk["inter"], last)
            inter_keys = torch.cat([anchor_k[None], others])  # (N, B, d)
            parts["inter"] = seco_inter_loss(query, inter_keys, queue, self.cfg.tau)
            self.queue.enqueue(inter_keys.flatten(0, 1), gather=self.distributed)
        if "intra" in losses:
            parts["intra"] = seco_intra_loss(*anchor_and_keys(zq["intra"], zk["intra"], last), self.cfg.tau)
        if "order" in losses:
            logits, labels = self.order_logits(zq["order"], zk["order"][:n], *shuffles)
            parts["order"] = F.cross_entropy(logits, labels)
        loss = sum(parts.values())
        if "order" in losses:
            parts["order_acc"] = accuracy(logits, labels)
        return loss, parts

    def order_logits(self, q_tuple: torch.Tensor, k_tuple: torch.Tensor, orders: torch.Tensor,
                     flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VCLR's 4-way order task on the tuples' order features ``(N, B, d)``, each tuple in its
        drawn order (:func:`draw_tuple_shuffles`): the logits and the labels, which say which of
        the two were shuffled (``q + 2 k``)."""
        q_shuffled = shuffle_tuples(q_tuple.transpose(0, 1), orders[0])
        k_shuffled = shuffle_tuples(k_tuple.detach().transpose(0, 1), orders[1])
        logits = self.order_classifier(torch.cat([q_shuffled.flatten(1), k_shuffled.flatten(1)], 1))
        return logits.float(), flags[0] + 2 * flags[1]
