"""CORP: contrast and order representations (Hu et al., ICCV 2021; no public code — the paper's
equations, with the choices it leaves open stated in docs/training.md).

- :class:`CORPf` (Sec. 3.3): B videos x 2 clips; per clip a (4B-2)-way classification, decomposed
  (eq. 6) into NT-Xent over the other 2B-1 clips of the (gathered) batch (eq. 5, tau 0.1) plus a
  2-way order head on the positive pair, both directions.
- :class:`CORPm` (Sec. 3.2): videos paired within the batch, K clips each; every ordered pair of
  distinct clips of a video pair gets a 3-way label (different videos / first precedes / second
  precedes); cross-entropy summed over the clip pairs.
- :class:`SimCLR`: the SimCLR/CVRL clip baseline = CORP_f without the order task, with
  independently drawn clips.

``losses`` selects Table 6's rows (``[contrast]``, ``[order]``, both); ``relation`` mixed vs
decoupling attention; ``mlp_layers`` the relation MLP's depth; ``num_clips`` CORP_m's K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.samplers import MinimalOffsetClipSampler, RandomClipsSampler
from vidssl.losses.corp import corp_f_order_loss, corp_m_decoupled_loss, corp_m_loss, corp_pair_labels, nt_xent
from vidssl.methods.base import DataSpec, Method, accuracy
from vidssl.models.backbones import Backbone, require_3d
from vidssl.models.heads import mlp
from vidssl.models.relation import DecouplingAttention, MixedAttention
from vidssl.modules.distributed import all_gather_with_grad, rank

CORP_LOSSES = ("contrast", "order")
RELATIONS = ("decoupling", "mixed")


@dataclass
class CORPConfig:
    losses: list[str] = field(default_factory=lambda: ["contrast", "order"])
    relation: str = "decoupling"
    heads: int = 128  # mixed attention heads h; decoupling: size of the G and P/Q parts
    mlp_layers: int = 2
    mlp_hidden: int = 256
    tau: float = 0.1
    num_clips: int = 2  # CORP_f: 2; CORP_m: K = 2..4 (CORPmConfig: 4, the paper's default)
    clip_len: int = 8  # paper: 16
    dilation: int = 1  # paper: 2 on Kinetics, 1 on Something-Something
    proj_hidden: int = 256  # paper: 2048
    proj_layers: int = 3  # hidden layers of the projection head (paper: 3)
    proj_dim: int = 128

    def validate(self) -> None:
        if not self.losses or any(x not in CORP_LOSSES for x in self.losses):
            raise ValueError(f"losses must be a non-empty subset of {CORP_LOSSES}, got {self.losses}")
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
        if self.mlp_layers < 1 or self.num_clips < 2:
            raise ValueError("mlp_layers must be >= 1 and num_clips >= 2")


def projection_head(in_dim: int, cfg: CORPConfig) -> nn.Sequential:
    """``proj_layers`` hidden layers of ``proj_hidden`` with BN and ReLU, then ``proj_dim``."""
    return mlp([in_dim] + [cfg.proj_hidden] * cfg.proj_layers + [cfg.proj_dim], batch_norm=True)


def relation_head(cfg: CORPConfig, num_outputs: int) -> nn.Module:
    if cfg.relation == "mixed":
        return MixedAttention(cfg.proj_dim, cfg.heads, cfg.mlp_hidden, cfg.mlp_layers, num_outputs)
    return DecouplingAttention(cfg.proj_dim, cfg.heads, cfg.heads, cfg.mlp_hidden, cfg.mlp_layers)


class _ClipEncoder(Method):
    """Backbone + projection head; ``embed`` returns L2-normalised features."""

    def __init__(self, cfg: CORPConfig, backbone: Backbone, distributed: bool) -> None:
        super().__init__(cfg, distributed)
        require_3d(backbone, "CORP")
        self.encoder = backbone
        self.projector = projection_head(backbone.feature_dim, cfg)

    @property
    def backbone(self) -> Backbone:
        return self.encoder

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(clips)), dim=-1)


class CORPf(_ClipEncoder):
    Config = CORPConfig

    def __init__(self, cfg: CORPConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, backbone, distributed)
        if "order" in cfg.losses:
            self.order_head = relation_head(cfg, 2)

    @staticmethod
    def data_spec(cfg: CORPConfig) -> DataSpec:
        return DataSpec(MinimalOffsetClipSampler(2, cfg.clip_len, cfg.dilation), "clip")

    @property
    def unused_parameters(self) -> bool:
        """The order term reads only the antisymmetric part (P, Q) of a decoupling head."""
        return "order" in self.cfg.losses and self.cfg.relation == "decoupling"

    def order_logits(self, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """2-way logits [z_i precedes z_j, z_j precedes z_i] (eq. 4)."""
        if isinstance(self.order_head, DecouplingAttention):
            o = self.order_head.order_logit(zi, zj)
            return torch.stack([o, torch.zeros_like(o)], -1)  # softmax = [sigmoid(o), sigmoid(-o)]
        return self.order_head(zi, zj)

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        z = self.embed(torch.cat(views[:2]))  # (2B, d): clips a then clips b
        parts: dict[str, torch.Tensor] = {}
        if "contrast" in self.cfg.losses:
            candidates = all_gather_with_grad(z, self.distributed)
            offset = rank() * 2 * b if self.distributed else 0
            local = torch.arange(2 * b, device=z.device)
            positive = offset + (local + b) % (2 * b)
            # eq. 6: 1/B sum over videos of both clips' terms = 2 x the mean over the 2B anchors
            parts["contrast"] = 2 * nt_xent(z, candidates, positive, offset + local, self.cfg.tau)
        if "order" in self.cfg.losses:
            za, zb = z[:b], z[b:]
            a_first = (info["starts"][:, 0] <= info["starts"][:, 1])[:, None]
            earlier, later = torch.where(a_first, za, zb), torch.where(a_first, zb, za)
            forward, backward = self.order_logits(earlier, later), self.order_logits(later, earlier)
            parts["order"] = corp_f_order_loss(forward, backward)
        loss = sum(parts.values())
        if "order" in self.cfg.losses:  # class 0 for (earlier, later), 1 for (later, earlier)
            labels = (torch.arange(2 * b, device=z.device) >= b).long()
            parts["order_acc"] = accuracy(torch.cat([forward, backward]), labels)
        return loss, parts


@dataclass
class CORPmConfig(CORPConfig):
    num_clips: int = 4  # K (paper default 4)


class CORPm(_ClipEncoder):
    Config = CORPmConfig

    def __init__(self, cfg: CORPConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, backbone, distributed)
        self.relation = relation_head(cfg, 3)

    @staticmethod
    def data_spec(cfg: CORPConfig) -> DataSpec:
        return DataSpec(MinimalOffsetClipSampler(cfg.num_clips, cfg.clip_len, cfg.dilation), "clip")

    @property
    def unused_parameters(self) -> bool:
        """Table 6's single-task rows leave one part of a decoupling head (G, or P and Q) idle."""
        return len(self.cfg.losses) == 1 and self.cfg.relation == "decoupling"

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k, b = len(views), views[0].shape[0]
        if b < 2:
            raise ValueError(f"CORP_m pairs the videos of a batch: the per-rank batch needs 2 or more, got {b}")
        z = self.embed(torch.cat(views)).view(k, b, -1).transpose(0, 1)  # (B, K, d)
        # every two videos of the rank's batch, (B^2 - B) / 2 pairs (CORP Sec. 3.2): video p's K
        # clips, then video q's, each pair with its 2K(2K-1) ordered clip pairs
        p, q = torch.triu_indices(b, b, offset=1, device=z.device)
        pairs = len(p)
        z_pairs = torch.cat([z[p], z[q]], 1)  # (pairs, 2K, d)
        starts_pairs = torch.cat([info["starts"][p], info["starts"][q]], 1)
        video = torch.arange(2 * k, device=z.device) // k
        i, j, labels = corp_pair_labels(video, starts_pairs)  # labels (P, 2K(2K-1))
        zi, zj, labels = z_pairs[:, i], z_pairs[:, j], labels.flatten()
        if isinstance(self.relation, DecouplingAttention):
            same = self.relation.same_logit(zi, zj).flatten()
            order_logit = self.relation.order_logit(zi, zj).flatten()
            parts = {name: corp_m_decoupled_loss(same, order_logit, labels, (name,)) / pairs
                     for name in self.cfg.losses}
            says_first = order_logit > 0
        else:
            logits = self.relation(zi, zj).flatten(0, 1)
            parts = {name: corp_m_loss(logits, labels, (name,)) / pairs for name in self.cfg.losses}
            says_first = logits[:, 1] > logits[:, 2]
        loss = sum(parts.values())
        if "order" in self.cfg.losses:  # on the clip pairs of one video: which comes first
            same_video = labels > 0
            right = (says_first == (labels == 1)) & same_video
            parts["order_acc"] = (right.sum() / same_video.sum()).detach().float()
        return loss, parts


@dataclass
class SimCLRConfig(CORPConfig):
    """SimCLR/CVRL on clips: CORP_f's contrast term only, clips drawn independently."""

    losses: list[str] = field(default_factory=lambda: ["contrast"])

    def validate(self) -> None:
        super().validate()
        if self.losses != ["contrast"]:
            raise ValueError("simclr.losses is [contrast] (SimCLR is CORP_f without the order task)")


class SimCLR(CORPf):
    Config = SimCLRConfig

    @staticmethod
    def data_spec(cfg: CORPConfig) -> DataSpec:
        return DataSpec(RandomClipsSampler(2, cfg.clip_len, cfg.dilation), "clip")
