"""SeCo's order objective learns where the frames carry their time (an oracle backbone).

SeCo's order head is a Linear over [q, k_f2, k_f3], each embedding computed from one frame: it adds
up what each frame shows on its own. Given features that reveal a frame's time, the machinery (the
sampler's labels, the heads, the loss and its gradient) must drive the order loss far below
chance (ln 2)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vidssl.data.samplers import SeCoTripletSampler
from vidssl.methods.seco import SeCo, SeCoConfig


class ClockBackbone(nn.Module):
    """Features from the frames' mean intensity ``m`` in ``[0, 1]`` (the frame's time in a clock
    video): ``(m, m^2)`` times a learned scale."""

    feature_dim = 2
    kind = "2d"

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return self.scale * torch.stack([m, m * m], 1)


def clock_batch(b: int, frames: int, rng: np.random.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    """SeCo's views of ``b`` videos whose frame ``t`` has intensity ``t / (frames - 1)``."""
    sampler = SeCoTripletSampler()
    plans = [sampler.plan(frames, rng) for _ in range(b)]
    def view(k: int) -> torch.Tensor:
        t = torch.tensor([p.views[k][0] / (frames - 1) for p in plans])
        return t.view(b, 1, 1, 1).expand(b, 3, 4, 4).contiguous()
    anchor = view(0)
    return [anchor, anchor.clone(), view(1), view(2)], torch.tensor([p.info["order"] for p in plans])


def test_seco_labels_match_the_sampled_frame_order():
    rng = np.random.default_rng(0)
    for frames in (4, 9, 64, 301):
        for _ in range(50):
            plan = SeCoTripletSampler().plan(frames, rng)
            (a,), (f2,), (f3,) = plan.views
            assert f2 < f3
            assert (a < f2) if plan.info["order"] == 0 else (a > f3)


def train_order(steps: int = 300) -> tuple[float, SeCo]:
    torch.manual_seed(0)
    cfg = SeCoConfig(losses=["inter", "order"], head_hidden=16, head_dim=8, queue_size=32, shuffle_bn_splits=1)
    method = SeCo(cfg, ClockBackbone())
    opt = torch.optim.Adam(method.parameters(), lr=0.02)
    rng = np.random.default_rng(1)
    last = []
    for step in range(steps):
        views, labels = clock_batch(32, 64, rng)
        _, parts = method(views, {"order": labels}, torch.Generator().manual_seed(step))
        opt.zero_grad()
        parts["order"].backward()
        opt.step()
        last.append(float(parts["order"].detach()))
    return sum(last[-30:]) / 30, method


def test_seco_order_head_learns_when_each_frame_shows_its_time():
    loss, method = train_order()
    assert loss < 0.2, loss  # chance: ln 2 = 0.69
    views, labels = clock_batch(8, 64, np.random.default_rng(2))
    method.zero_grad()
    _, parts = method(views, {"order": labels})
    parts["order"].backward()
    assert method.backbone.scale.grad.abs() > 0  # the order loss trains the backbone too
