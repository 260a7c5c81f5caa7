"""VCLR: video-level contrastive learning (Kuang et al., ICCV 2021; DESIGN.md §3).

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

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.samplers import VCLRSampler
from vidssl.losses import info_nce, order_cross_entropy, seco_inter_loss, seco_intra_loss, sum_parts
from vidssl.models.backbones import Backbone
from vidssl.models.heads import ParallelHeads, check_head_hidden, mlp
from vidssl.modules.device import host_to_device, step_constant
from vidssl.modules.momentum import ema_update_, momentum_copy
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation
from vidssl.modules.views import cat_views

VCLR_LOSSES = ("video", "inter", "intra", "order")


@dataclass
class VCLRConfig:
    """``losses`` selects the rows of the paper's Table 6; ``num_segments`` its Table 7 (N = 1..5;
    the order loss needs N >= 3)."""

    losses: list[str] = field(default_factory=lambda: ["video", "inter", "intra", "order"])
    num_segments: int = 3
    clip_len: int = 1  # > 1: one clip per segment (3D backbones)
    dilation: int = 1
    tau: float = 0.1
    queue_size: int = 256  # frame keys for inter; paper: 131072 (Kinetics)
    video_queue_size: int = 128  # key-tuple embeddings; paper: 65536
    momentum: float = 0.99  # paper: 0.999
    head_hidden: int | None = None  # None: the backbone's feature size, the paper's ratio (2048 on R50's 2048)
    head_dim: int = 128
    shuffle_bn_splits: int = 2  # single-process emulation of per-GPU BN; ignored under DDP

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
        check_head_hidden("vclr", self.head_hidden)


def shuffling_permutations(n: int) -> torch.Tensor:
    """All permutations of ``n`` elements that are neither the identity nor the reversal."""
    identity, reversal = tuple(range(n)), tuple(reversed(range(n)))
    perms = [p for p in itertools.permutations(range(n)) if p not in (identity, reversal)]
    return torch.tensor(perms, dtype=torch.long).view(-1, n)


@step_constant
def _tuple_orders(n: int) -> torch.Tensor:
    """The orders a tuple of ``n`` can take in the order task, each followed by its shuffled flag:
    row 0 the identity (flag 0), row ``1 + i`` the ``i``-th of :func:`shuffling_permutations` (flag 1)."""
    perms = torch.cat([torch.arange(n)[None], shuffling_permutations(n)])
    return torch.cat([perms, (torch.arange(len(perms)) > 0).long()[:, None]], 1)


@torch.compiler.disable
def draw_tuple_shuffles(draws: int, b: int, n: int, generator: torch.Generator | None,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` independent shuffles of ``b`` tuples of ``n`` segments for the 4-way order task:
    each tuple keeps its order or, with probability 1/2, takes a random permutation that is neither
    the identity nor the reversal. Returns the orders ``(draws, B, N)`` and the 0/1 shuffled flags
    ``(draws, B)`` on ``device``, copied together without a host wait. Drawn draw after draw, the
    flags before the permutations, outside compiled graphs (the draws use a host generator): one
    graph break for all of them."""
    table = _tuple_orders(n)
    flags, choices = [], []
    for _ in range(draws):
        flags.append(torch.randint(0, 2, (b,), generator=generator))
        choices.append(torch.randint(0, len(table) - 1, (b,), generator=generator))
    rows = torch.stack(choices).add_(1).mul_(torch.stack(flags))  # 0 (kept) or 1 + the permutation drawn
    together = host_to_device(table[rows], device)
    return together[..., :n], together[..., n]


def shuffle_tuples(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Each row's tuple ``x[b]`` (``(B, N, D)``) in the order ``order[b]`` (``(B, N)``)."""
    return torch.gather(x, 1, order[..., None].expand_as(x))


class VCLRHeads(nn.Module):
    """Per-frame projection heads (one per frame loss, computed together) plus the video head on
    the mean frame feature."""

    def __init__(self, in_dim: int, cfg: VCLRConfig) -> None:
        super().__init__()
        names = [name for name in cfg.losses if name != "video"]
        hidden = cfg.head_hidden or in_dim
        self.frame = ParallelHeads(names, in_dim, hidden, cfg.head_dim) if names else None
        self.video = mlp([in_dim, hidden, cfg.head_dim]) if "video" in cfg.losses else None

    def column(self, name: str) -> int:
        """Where the frame head ``name`` sits on the heads axis of :meth:`frames`."""
        return self.frame.names.index(name)

    def frames(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(..., D)`` → every frame head's normalised embedding
        ``(..., heads, d)``, in one pass."""
        z = F.normalize(self.frame(h.reshape(-1, h.shape[-1])), dim=-1)
        return z.view(*h.shape[:-1], *z.shape[1:])

    def video_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """A tuple's features ``(N, B, D)``, segment by segment → its normalised video embedding ``(B, d)``."""
        return F.normalize(self.video(h.mean(0)), dim=-1)


class VCLREncoder(nn.Module):
    def __init__(self, backbone: Backbone, cfg: VCLRConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = VCLRHeads(backbone.feature_dim, cfg)


class VCLR(nn.Module):
    config_class = VCLRConfig

    def __init__(self, cfg: VCLRConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__()
        cfg.validate()
        want = "2d" if cfg.clip_len == 1 else "3d"
        if backbone.kind != want:
            raise ValueError(f"vclr.clip_len={cfg.clip_len} needs a {want} backbone, got {backbone.arch}")
        self.cfg = cfg
        self.distributed = distributed
        self.encoder_q = VCLREncoder(backbone, cfg)
        self.encoder_k = momentum_copy(self.encoder_q)
        if "inter" in cfg.losses:
            self.queue = KeyQueue(cfg.queue_size, cfg.head_dim)
        if "video" in cfg.losses:
            self.video_queue = KeyQueue(cfg.video_queue_size, cfg.head_dim, seed=1)
        if "order" in cfg.losses:
            self.order_classifier = nn.Linear(2 * cfg.num_segments * cfg.head_dim, 4)

    @property
    def backbone(self) -> Backbone:
        return self.encoder_q.backbone

    @staticmethod
    def data_spec(cfg: VCLRConfig) -> dict:
        return {"sampler": VCLRSampler(cfg.num_segments, cfg.clip_len, cfg.dilation),
                "repeat": None, "layout": "frame" if cfg.clip_len == 1 else "clip",
                "queue_keys": {"queue_size": cfg.num_segments, "video_queue_size": 1}}

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = self.cfg.num_segments
        b = views[0].shape[0]
        losses = self.cfg.losses
        # the host's work first (a compiled step breaks here, before its graph): the key batch's
        # shuffle, then the order task's tuple shuffles (the query's, the key's), and the queues
        device = views[0].device
        perm = shuffle_permutation(b * n + b, self.distributed, generator, device)
        if "order" in losses:
            orders, flags = draw_tuple_shuffles(2, b, n, generator, device)
        queue = self.queue.snapshot() if "inter" in losses else None
        video_queue = self.video_queue.snapshot() if "video" in losses else None
        # both batches segment by segment, (N*B, ...): the query tuple; the key tuple, then the
        # anchors' second views
        hq = self.backbone(cat_views(views[:n])).view(n, b, -1)
        heads_q = self.encoder_q.heads
        frame_losses = heads_q.frame is not None
        with torch.no_grad():
            ema_update_(self.encoder_k, self.encoder_q, self.cfg.momentum)
            hk = shuffle_bn_forward(self.encoder_k.backbone, cat_views(views[n:]), perm, self.distributed,
                                    self.cfg.shuffle_bn_splits).view(n + 1, b, -1)
            heads_k = self.encoder_k.heads
            if frame_losses:  # one pass over the key tuple and the anchor's second view
                zk = heads_k.frames(hk)
                k_tuple, k_anchor = zk[:n], zk[n]  # (N, B, heads, d), (B, heads, d)
            if heads_k.video is not None:
                k_video = heads_k.video_embedding(hk[:n])
        zq = heads_q.frames(hq) if frame_losses else None  # (N, B, heads, d): every segment, every frame head
        parts: dict[str, torch.Tensor] = {}
        if "video" in losses:
            parts["video"] = info_nce(heads_q.video_embedding(hq), k_video, video_queue, self.cfg.tau)
        if "inter" in losses or "intra" in losses:
            last = info["anchor_last"].bool()[:, None, None]  # per video, against (..., B, heads, d)
            query = torch.where(last, zq[n - 1], zq[0])  # (B, heads, d): the anchor's segment
            # the other segments, in temporal order, without the anchor's: 0..N-2 or 1..N-1
            other = torch.where(last, k_tuple[:n - 1], k_tuple[1:])  # (N-1, B, heads, d)
            if "inter" in losses:  # positives: the anchor's second view and the other segments' frames
                i = heads_q.column("inter")
                inter_keys = torch.cat([k_anchor[None, :, i], other[:, :, i]])  # (N, B, d)
                parts["inter"] = seco_inter_loss(query[:, i], inter_keys, queue, self.cfg.tau)
            if "intra" in losses:
                i = heads_q.column("intra")
                parts["intra"] = seco_intra_loss(query[:, i], k_anchor[:, i], other[:, :, i], self.cfg.tau)
        if "order" in losses:
            i = heads_q.column("order")
            q_shuffled = shuffle_tuples(zq[:, :, i].transpose(0, 1), orders[0])
            k_shuffled = shuffle_tuples(k_tuple[:, :, i].transpose(0, 1), orders[1])
            logits = self.order_classifier(torch.cat([q_shuffled.flatten(1), k_shuffled.flatten(1)], 1))
            parts["order"] = order_cross_entropy(logits, flags[0] + 2 * flags[1])
        if "inter" in losses:
            self.queue.enqueue(inter_keys.flatten(0, 1), gather=self.distributed)
        if "video" in losses:
            self.video_queue.enqueue(k_video, gather=self.distributed)
        return sum_parts(parts), parts
