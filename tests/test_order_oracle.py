"""Every order objective learns where the frames carry their time, and cannot where they do not.

SeCo's and VCLR's order heads are a Linear over per-frame embeddings: they add up what each frame
shows on its own, so they can only use a frame's own evidence of where in its video it lies. CORP's
relation heads compare two clip embeddings. The oracle is a *clock video*, whose frame ``t`` is a
flat grey of intensity ``t / (F - 1)``, read by a backbone that reports its frames' intensity: the
whole pipeline (sampler, dataset, collation, labels, heads, loss and gradient) must then drive each
order loss far below chance. Played backwards at random (a world without an arrow of time) SeCo's
must stay at chance; VCLR's, whose shuffles exclude the reversal, need not; CORP's need not either,
given clip features that show which way the clock runs (docs/data.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vidssl.data.dataset import VideoDataset, collate_samples
from vidssl.data.records import VideoRecord, VideoSource
from vidssl.methods.corp import CORPConfig, CORPf, CORPm, CORPmConfig
from vidssl.methods.seco import SeCo, SeCoConfig
from vidssl.methods.vclr import VCLR, VCLRConfig

FRAMES = 64


class ClockReader:
    """Frame ``t`` of a clock video: flat grey ``t / (F - 1)``, or ``1 - t / (F - 1)`` played
    backwards (``clock://<i>/backward``)."""

    def __init__(self, record: VideoRecord) -> None:
        self.backward = record.path.endswith("backward")
        self.num_frames = FRAMES
        self.fps = 25.0

    def get_frames(self, indices) -> torch.Tensor:
        t = torch.tensor(list(indices), dtype=torch.float32) / (FRAMES - 1)
        t = 1 - t if self.backward else t
        return (255 * t).round().to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()

    def close(self) -> None:
        pass


class ClockBackbone(nn.Module):
    """Per frame (2D) or per clip (3D): the mean intensity ``m`` in [0, 1] and ``m^2`` (a 3D clip's
    ``m`` is its frames' mean), times a learned scale. ``direction``: a clip's change from its first
    to its last frame as well (which way its clock runs)."""

    arch = "clock"

    def __init__(self, kind: str, direction: bool = False) -> None:
        super().__init__()
        self.kind, self.direction = kind, direction
        self.feature_dim = 3 if direction else 2
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        features = [m, m * m]
        if self.direction:  # (B, C, T, H, W)
            frames = x.mean((1, 3, 4))
            features.append(10 * (frames[:, -1] - frames[:, 0]))
        return self.scale * torch.stack(features, 1)


def clock_dataset(method: type, cfg, reversible: bool) -> VideoDataset:
    """The method's samples of 64 clock videos; with ``reversible``, every other one backwards."""
    records = [VideoRecord(f"clock://{i}/{'backward' if reversible and i % 2 else 'forward'}", 0, num_frames=FRAMES)
               for i in range(64)]
    spec = method.data_spec(cfg)
    return VideoDataset(VideoSource(records, root="clock"), spec.sampler, lambda clip, g: clip.float() / 255,
                        ClockReader, repeat=spec.repeat, layout=spec.layout)


def train_order(method: nn.Module, dataset: VideoDataset, steps: int = 250, batch: int = 32) -> float:
    """Adam on the order loss alone; its mean over the last 30 steps."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(method.parameters(), lr=0.02)
    rng = np.random.default_rng(1)
    last = []
    for step in range(steps):
        samples = collate_samples([dataset[(step, int(i))] for i in rng.choice(len(dataset), batch, replace=False)])
        _, parts = method(samples["views"], samples["info"], torch.Generator().manual_seed(step))
        opt.zero_grad()
        parts["order"].backward()
        opt.step()
        last.append(float(parts["order"].detach()))
    return sum(last[-30:]) / 30


def seco() -> tuple[nn.Module, float]:
    cfg = SeCoConfig(losses=["inter", "order"], head_hidden=16, head_dim=8, queue_size=64, shuffle_bn_splits=1)
    return SeCo(cfg, ClockBackbone("2d")), math.log(2)


def vclr() -> tuple[nn.Module, float]:
    cfg = VCLRConfig(losses=["order"], head_hidden=16, head_dim=8, shuffle_bn_splits=1)
    return VCLR(cfg, ClockBackbone("2d")), math.log(4)


def corp_f(direction: bool = False) -> tuple[nn.Module, float]:
    cfg = CORPConfig(losses=["order"], clip_len=4, heads=8, mlp_hidden=16, proj_hidden=16, proj_dim=8)
    return CORPf(cfg, ClockBackbone("3d", direction)), 2 * math.log(2)  # both directions of the pair


def corp_m(direction: bool = False) -> tuple[nn.Module, float]:
    cfg = CORPmConfig(losses=["order"], clip_len=4, heads=8, mlp_hidden=16, proj_hidden=16, proj_dim=8)
    k = cfg.num_clips
    return CORPm(cfg, ClockBackbone("3d", direction)), 2 * k * (k - 1) * math.log(2)  # a video pair's clip pairs


ORDER_METHODS = {"seco": seco, "vclr": vclr, "corp_f": corp_f, "corp_m": corp_m}


@pytest.mark.parametrize("name", list(ORDER_METHODS))
def test_order_loss_learns_from_frames_that_show_their_time(name):
    method, chance = ORDER_METHODS[name]()
    loss = train_order(method, clock_dataset(type(method), method.cfg, reversible=False))
    assert loss < 0.25 * chance, (loss, chance)
    # the order loss trains the backbone too
    samples = collate_samples([clock_dataset(type(method), method.cfg, False)[(0, i)] for i in range(8)])
    method.zero_grad()
    method(samples["views"], samples["info"], torch.Generator().manual_seed(0))[1]["order"].backward()
    assert method.backbone.scale.grad.abs() > 0


def test_seco_order_stays_at_chance_without_an_arrow_of_time():
    """Clocks running either way: a frame shows how far it is from the video's ends but not which
    end came first. SeCo's head sums per-frame evidence and cannot tell its two orders apart."""
    method, chance = seco()
    loss = train_order(method, clock_dataset(SeCo, method.cfg, reversible=True))
    assert loss > 0.85 * chance, (loss, chance)


def test_vclr_order_needs_no_arrow_of_time():
    """VCLR's shuffles exclude the reversal: a frame that shows its distance from the video's middle
    (``m`` and ``m^2`` give ``(m - 1/2)^2``) tells a monotone tuple from a scrambled one, whichever
    way the clock runs."""
    method, chance = vclr()
    loss = train_order(method, clock_dataset(VCLR, method.cfg, reversible=True))
    assert loss < 0.25 * chance, (loss, chance)


@pytest.mark.parametrize("name", ["corp_f", "corp_m"])
def test_corp_order_needs_clips_that_show_their_direction_not_an_arrow_of_time(name):
    """Clocks running either way: a clip's mean level says where it lies but not which end came
    first, and CORP stays at chance; a clip that also shows which way its clock runs settles the
    order of two clips of one video (the relation head compares them), arrow of time or not."""
    method, chance = ORDER_METHODS[name]()
    assert train_order(method, clock_dataset(type(method), method.cfg, reversible=True)) > 0.85 * chance
    method, chance = ORDER_METHODS[name](direction=True)
    assert train_order(method, clock_dataset(type(method), method.cfg, reversible=True)) < 0.25 * chance


def test_seco_labels_match_the_frame_order():
    """The dataset's order label says whether the anchor view's frame precedes the two others."""
    method, _ = seco()
    dataset = clock_dataset(SeCo, method.cfg, reversible=False)
    for key in [(e, i) for e in range(3) for i in range(0, 64, 5)]:
        sample = dataset[key]
        anchor, anchor2, f2, f3 = (float(v.mean()) for v in sample["views"])
        assert anchor == anchor2 and f2 < f3
        assert (anchor < f2) if int(sample["info"]["order"]) == 0 else (anchor > f3)
