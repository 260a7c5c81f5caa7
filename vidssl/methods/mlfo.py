"""MLFO: multi-level feature optimisation (Qian et al., ICCV 2021; docs/methods.md).

Per video a window of ``2 x clip_len`` frames at a random stride (MLFOWindowSampler): clip 1 = its
first half, clip 2 = its second half, the global clip = every second frame. One backbone pass over
the three; the low / mid / high feature maps feed

- L_high = L_ins + w_sem L_sem (eq. 2-5): instance discrimination over the gathered batch and
  swapped prediction against Sinkhorn codes of prototype scores (a queue of past scores joins the
  Sinkhorn problem after ``queue_start_epoch``; prototypes frozen for ``freeze_prototypes_epochs``);
- L_mul (eq. 6-10): each level in ``graph_levels`` matches its similarity distribution to the graph
  targets built from the high level, after the first ``graph_start`` fraction of epochs;
- temporal modelling (Sec. 3.3), ``temporal``: ``feature`` = L_aug on motion-excitation branches of
  the ``temporal_levels`` maps with their time-reversed/shuffled versions as negatives (eq. 11-12)
  plus timestamp retrieval between each clip and the global clip (eq. 13); ``input`` = the
  conventional baseline of Table 3 (reversed/shuffled *input* clips as the negatives of the
  high-level embedding); ``none``.

Table 2's rows: ``graph_targets`` none / onehot / instance / semantic / combined, with
``graph_levels: [low, mid, high]`` (multi-level) or ``[high]``. Table 3's: ``temporal``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.samplers import MLFOWindowSampler
from vidssl.losses.contrastive import info_nce
from vidssl.losses.mlfo import (
    GRAPH_TARGETS,
    graph_contrast,
    graph_loss,
    graph_targets,
    instance_loss,
    motion_contrast,
    sinkhorn,
    swapped_prediction_loss,
    timestamp_retrieval_loss,
)
from vidssl.methods.base import DataSpec, Method
from vidssl.models.backbones import LEVELS, Backbone, require_3d
from vidssl.models.heads import mlp
from vidssl.models.temporal import TEMPORAL_AUGS, MotionBranch, StepHead, order_indices, temporal_augment, time_order
from vidssl.modules.batch_norm import forward_per_group
from vidssl.modules.distributed import all_gather_nograd, all_gather_with_grad, rank
from vidssl.modules.queue import KeyQueue

TEMPORAL_MODES = ("none", "input", "feature")
LOSS_FORMS = ("code", "paper")


@dataclass
class MLFOConfig:
    clip_len: int = 8  # frames per short clip; the window is twice as long (paper: 16 of 32)
    strides: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    max_rate: float = 0.0  # > 0: a real stride in [1, max_rate] as the official code (its --rate 3)
    proj_hidden: int = 256  # paper: 2048
    proj_dim: int = 128
    tau: float = 0.07
    prototypes: int = 50  # K (paper: 1000); keep it above the number of classes you expect
    sinkhorn_eps: float = 0.05
    sinkhorn_iterations: int = 3
    sem_temperature: float = 0.1
    sem_weight: float = 0.5
    score_queue: int = 256  # paper: 1024
    queue_start_epoch: int = 2
    freeze_prototypes_epochs: int = 1
    graph_targets: str = "combined"  # none | onehot | instance | semantic | combined
    graph_levels: list[str] = field(default_factory=lambda: ["low", "mid", "high"])
    low_weight: float = 0.3
    mid_weight: float = 0.5
    high_weight: float = 1.0
    eta: float = 0.05
    graph_start: float = 0.15  # E: fraction of the epochs trained on L_high alone (paper: 10-20%)
    temporal: str = "feature"  # none | input | feature
    temporal_levels: list[str] = field(default_factory=lambda: ["low", "mid"])
    temporal_augs: list[str] = field(default_factory=lambda: ["reverse", "shuffle"])
    motion_excitation: bool = True  # False: identity side branches (the ablation that cannot work)
    me_reduction: int = 16
    retrieval_levels: list[str] = field(default_factory=lambda: ["low", "mid"])
    aug_weight: float = 1.0
    ret_weight: float = 1.0
    # code: the official code's forms (DESIGN §3): L_mul one view against the gathered other
    # (graph_contrast), L_aug with the other videos' clips as negatives too (motion_contrast),
    # L_aug and L_ret weighted per level as L_mul; paper: eq. 10-12 as written, weights 1
    loss_form: str = "code"

    def validate(self) -> None:
        if self.graph_targets not in ("none", *GRAPH_TARGETS):
            raise ValueError(f"mlfo.graph_targets must be none or one of {GRAPH_TARGETS}, got {self.graph_targets!r}")
        if self.temporal not in TEMPORAL_MODES:
            raise ValueError(f"mlfo.temporal must be one of {TEMPORAL_MODES}, got {self.temporal!r}")
        for key in ("graph_levels", "temporal_levels", "retrieval_levels"):
            bad = [x for x in getattr(self, key) if x not in LEVELS]
            if bad:
                raise ValueError(f"mlfo.{key}: unknown level(s) {bad}; choose from {LEVELS}")
        bad = [x for x in self.temporal_augs if x not in TEMPORAL_AUGS]
        if bad or (self.temporal != "none" and not self.temporal_augs):
            raise ValueError(f"mlfo.temporal_augs must be a non-empty subset of {TEMPORAL_AUGS}, "
                             f"got {self.temporal_augs}")
        rate_ok = self.max_rate == 0 or self.max_rate >= 1
        if self.prototypes < 2 or self.clip_len < 2 or not self.strides or not rate_ok:
            raise ValueError("mlfo.prototypes and mlfo.clip_len must be >= 2, mlfo.strides non-empty, "
                             "mlfo.max_rate 0 or >= 1")
        if self.loss_form not in LOSS_FORMS:
            raise ValueError(f"mlfo.loss_form must be one of {LOSS_FORMS}, got {self.loss_form!r}")
        if not 0.0 <= self.graph_start <= 1.0:
            raise ValueError(f"mlfo.graph_start is a fraction of the epochs, got {self.graph_start}")

    def level_weight(self, level: str) -> float:
        return {"low": self.low_weight, "mid": self.mid_weight, "high": self.high_weight}[level]

    def temporal_weight(self, level: str) -> float:
        """L_aug's and L_ret's level factor: the levels' weights in the code's total, 1 in the paper's."""
        return self.level_weight(level) if self.loss_form == "code" else 1.0


def _projector(channels: int, cfg: MLFOConfig) -> nn.Sequential:
    return mlp([channels, cfg.proj_hidden, cfg.proj_dim], batch_norm=True)


class MLFO(Method):
    Config = MLFOConfig

    def __init__(self, cfg: MLFOConfig, backbone: Backbone, distributed: bool = False) -> None:
        super().__init__(cfg, distributed)
        require_3d(backbone, "MLFO")
        self.encoder = backbone
        channels = backbone.level_channels
        # one projection head per level: the high one serves L_ins, L_sem and the graph; the others L_mul
        self.projectors = nn.ModuleDict({lv: _projector(channels[lv], cfg)
                                         for lv in LEVELS if lv == "high" or lv in cfg.graph_levels})
        self.prototypes = nn.Parameter(F.normalize(torch.randn(cfg.prototypes, cfg.proj_dim), dim=1))
        # one FIFO of past scores per view, as the official code keeps them
        self.score_queues = nn.ModuleList([KeyQueue(cfg.score_queue, cfg.prototypes, seed=v) for v in range(2)])
        if cfg.temporal == "feature":
            self.motion = nn.ModuleDict({lv: MotionBranch(channels[lv], cfg.proj_hidden, cfg.proj_dim,
                                                          cfg.motion_excitation, cfg.me_reduction)
                                         for lv in cfg.temporal_levels})
            self.steps = nn.ModuleDict({lv: StepHead(channels[lv], cfg.proj_hidden, cfg.proj_dim)
                                        for lv in cfg.retrieval_levels})
        self.set_epoch(0, 1)

    @property
    def backbone(self) -> Backbone:
        return self.encoder

    @staticmethod
    def data_spec(cfg: MLFOConfig) -> DataSpec:
        return DataSpec(MLFOWindowSampler(2 * cfg.clip_len, tuple(cfg.strides), cfg.max_rate), "clip")

    @property
    def unused_parameters(self) -> bool:
        """The frozen prototypes (first epochs) and the lower levels' heads (before the graph
        stage) get no gradient in some steps."""
        return True

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The engine's progress, kept as the three switches it drives: stage two (Sec. 4.2: L_mul
        joins after the first ``graph_start`` fraction of the epochs), the score queue's part in the
        Sinkhorn problems, and the prototype freeze. Not the epoch itself: a compiled step
        specialises on the attributes it reads and would recompile at every epoch (and run eagerly
        once dynamo's recompile limit is reached); on three switches it compiles once per stage."""
        cfg = self.cfg
        self.graph_active = cfg.graph_targets != "none" and epoch >= math.ceil(cfg.graph_start * epochs)
        self.queue_active = epoch >= cfg.queue_start_epoch
        self.prototypes_frozen = epoch < cfg.freeze_prototypes_epochs

    def embed(self, level: str, pooled: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """The level's embeddings of ``groups`` batches of clips stacked along dim 0 (their feature
        maps average-pooled, ``(G * B, C)``), each batch its own call of the projector (its own
        BatchNorm statistics, :func:`forward_per_group`)."""
        return F.normalize(forward_per_group(self.projectors[level], pooled, groups), dim=-1)

    def codes(self, scores: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes ``(V, B, K)`` of this rank's rows of each view's scores ``(V, B, K)``, one
        problem per view solved jointly with every rank's scores of that view and, after the
        warm-up, that view's queued scores of earlier batches (no gradient). The views' problems run
        together, with one gather. The whole queue joins each problem with its unfilled slots masked
        out: one shape however full it is, and no read of its fill on the host."""
        views, b = scores.shape[:2]
        everyone = all_gather_nograd(scores.detach().transpose(0, 1), self.distributed).transpose(0, 1)
        eps, iterations = self.cfg.sinkhorn_eps, self.cfg.sinkhorn_iterations
        if self.queue_active:
            queue = torch.stack([q.keys for q in self.score_queues])  # the views fill theirs alike
            valid = torch.cat([torch.ones(everyone.shape[1], dtype=torch.bool, device=scores.device),
                               self.score_queues[0].filled_mask()])
            q = sinkhorn(torch.cat([everyone, queue], 1), eps, iterations, valid)
        else:
            q = sinkhorn(everyone, eps, iterations)
        start = rank() * b if self.distributed else 0
        return q[:, start:start + b]

    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        clip1, clip2, whole = views
        b = clip1.shape[0]
        inputs = [clip1, clip2] + ([whole] if cfg.temporal == "feature" else [])
        if cfg.temporal == "input":  # Table 3's conventional baseline: transformed input clips
            inputs += [temporal_augment(c, name, generator) for name in cfg.temporal_augs for c in (clip1, clip2)]
        levels = self.encoder.forward_levels(torch.cat(inputs))  # each (len(inputs) * B, C, T, H, W)
        self_index = (rank() * b if self.distributed else 0) + torch.arange(b, device=clip1.device)

        def gathered(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return all_gather_with_grad(z1, self.distributed), all_gather_with_grad(z2, self.distributed)

        z = self.embed("high", levels["high"][: 2 * b].flatten(2).mean(-1), groups=2)  # clip 1's rows, then clip 2's
        z1, z2 = z.chunk(2)
        z1_all, z2_all = gathered(z1, z2)
        parts = {"ins": instance_loss(z1, z2, z1_all, z2_all, self_index, cfg.tau)}

        prototypes = F.normalize(self.prototypes, dim=1)
        if self.prototypes_frozen:
            prototypes = prototypes.detach()
        scores = z @ prototypes.T
        codes = self.codes(scores.view(2, b, -1))
        parts["sem"] = cfg.sem_weight * swapped_prediction_loss(*scores.chunk(2), *codes, cfg.sem_temperature)
        for queue, view_scores in zip(self.score_queues, scores.detach().chunk(2), strict=True):
            queue.enqueue(view_scores, self.distributed)

        # the lower levels' maps spatially pooled once for every loss on them, (rows, C, T): their
        # gradients then meet on the pooled steps, not as several full-size maps
        steps = {lv: levels[lv].mean((3, 4)) for lv in self.pooled_levels()}

        if self.graph_active:
            codes_sum = codes[0] + codes[1]
            targets = graph_targets(z1, z2, z1_all, z2_all, codes_sum, all_gather_nograd(codes_sum, self.distributed),
                                    self_index, cfg.graph_targets, cfg.tau, cfg.eta)
            for lv in cfg.graph_levels:
                r1, r2 = (z1, z2) if lv == "high" else self.embed(lv, steps[lv][: 2 * b].mean(-1), groups=2).chunk(2)
                r1_all, r2_all = (z1_all, z2_all) if lv == "high" else gathered(r1, r2)
                if cfg.loss_form == "code":
                    mul = graph_contrast(targets, r1, r2_all, cfg.tau)
                else:
                    mul = graph_loss(targets, r1, r2, r1_all, r2_all, self_index, cfg.tau)
                parts[f"mul_{lv}"] = cfg.level_weight(lv) * mul

        if cfg.temporal == "feature":
            orders = self.time_orders([levels[lv].shape[2] for lv in cfg.temporal_levels], generator, z1.device)
            for lv, times in zip(cfg.temporal_levels, orders, strict=True):
                parts[f"aug_{lv}"] = cfg.temporal_weight(lv) * cfg.aug_weight * self.motion_loss(
                    lv, levels[lv][: 2 * b], times, steps[lv][: 2 * b], self_index)
            for lv in cfg.retrieval_levels:
                parts[f"ret_{lv}"] = cfg.temporal_weight(lv) * cfg.ret_weight * self.retrieval_loss(lv, steps[lv])
        elif cfg.temporal == "input":
            # per aug: clip 1, clip 2, each its own projector call
            transformed = self.embed("high", levels["high"][2 * b:].flatten(2).mean(-1),
                                     groups=len(inputs) - 2).chunk(len(inputs) - 2)
            neg1 = torch.stack(transformed[0::2], dim=1)  # (B, A, d)
            neg2 = torch.stack(transformed[1::2], dim=1)
            parts["aug_input"] = cfg.aug_weight * (info_nce(z1, z2, neg1, cfg.tau) + info_nce(z2, z1, neg2, cfg.tau))
        return sum(parts.values()), parts

    @torch.compiler.disable
    def time_orders(self, steps: list[int], generator: torch.Generator | None,
                    device: torch.device) -> list[torch.Tensor]:
        """For each temporal level (its number of time steps ``T``), the orders of clip 1 and of
        clip 2 as ``(2, 1 + A, T)`` indices on ``device`` (:func:`order_indices`): as it is, then
        each ``Aug_k`` of eq. 12, drawn level after level, clip 1 first. Outside compiled graphs:
        the draws use a generator and a data-dependent check."""
        augs = self.cfg.temporal_augs
        return [order_indices([[None] + [time_order(a, t, generator) for a in augs] for _ in range(2)], t, device)
                for t in steps]

    def pooled_levels(self) -> set[str]:
        """The levels whose maps this step's losses pool over space (per time step): the graph
        levels below ``high`` (in stage two; ``high``'s graph term reuses ``z``) and, with
        feature-level temporal modelling, the temporal and retrieval levels."""
        cfg = self.cfg
        levels = set(cfg.graph_levels) - {"high"} if self.graph_active else set()
        if cfg.temporal == "feature":
            levels |= {*cfg.temporal_levels, *cfg.retrieval_levels}
        return levels

    def motion_loss(self, level: str, pair: torch.Tensor, times: torch.Tensor, steps: torch.Tensor,
                    self_index: torch.Tensor) -> torch.Tensor:
        """L_aug (eq. 11-12) at one level on the maps of clip 1 and clip 2 stacked in ``pair``
        ``(2 B, C, T, H, W)``: ME(f^1) and ME(f^2) are positives; the branch applied to each temporal
        transformation of the anchor's own map (``times[0, 1:]``, ``times[1, 1:]``, see
        :meth:`time_orders`) are its negatives and, in the code's form, both clips of every other
        video of the gathered batch. Both views anchor. ``steps``: the maps' spatial means
        ``(2 B, C, T)``."""
        e1, e2 = self.motion[level].reordered(pair, times, steps)  # each (B, 1 + A, d)
        tau = self.cfg.tau
        if self.cfg.loss_form == "paper":
            return info_nce(e1[:, 0], e2[:, 0], e1[:, 1:], tau) + info_nce(e2[:, 0], e1[:, 0], e2[:, 1:], tau)
        one, two = all_gather_with_grad(e1[:, 0], self.distributed), all_gather_with_grad(e2[:, 0], self.distributed)
        others, n = torch.cat([one, two]), len(one)
        own = torch.zeros(len(e1), 2 * n, dtype=torch.bool, device=e1.device)
        own.scatter_(1, torch.stack([self_index, self_index + n], 1), True)
        return (motion_contrast(e1[:, 0], e2[:, 0], e1[:, 1:], others, own, tau)
                + motion_contrast(e2[:, 0], e1[:, 0], e2[:, 1:], others, own, tau))

    def retrieval_loss(self, level: str, steps: torch.Tensor) -> torch.Tensor:
        """L_ret (eq. 13) at one level, on the maps of clip 1, clip 2 and the global clip spatially
        pooled per time step and stacked in ``steps`` ``(3 B, C, T)``. Clip 1 spans the first half
        of the window, clip 2 the second, the global clip all of it at half the frame rate, and the
        three have the same number ``T`` of time steps: pairs of a clip's steps are average-pooled
        so that step ``k`` of clip 1 (clip 2) covers exactly the time of global step ``k``
        (``T/2 + k``). The step head (no BatchNorm) embeds the three clips' steps in one call."""
        b, t = len(steps) // 3, steps.shape[2]
        if t < 2 or t % 2:
            raise ValueError(f"mlfo timestamp retrieval at level {level!r} needs an even number of time steps, "
                             f"the backbone gives {t}: use other mlfo.retrieval_levels or a longer mlfo.clip_len")
        clip1, clip2 = steps[: 2 * b].unflatten(-1, (t // 2, 2)).mean(-1).chunk(2)  # (B, C, T/2) each
        embedded = self.steps[level].embed_steps(torch.cat([clip1, clip2, steps[2 * b:]], dim=2))  # (B, 2 T, d)
        short1, short2, long = embedded.split([t // 2, t // 2, t], dim=1)
        return 0.5 * (timestamp_retrieval_loss(short1, long, 0, self.cfg.tau)
                      + timestamp_retrieval_loss(short2, long, t // 2, self.cfg.tau))
