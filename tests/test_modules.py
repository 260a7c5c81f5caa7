from __future__ import annotations

import torch
from torch import nn

from vidssl.engine.optim import lr_at
from vidssl.modules.momentum import ema_update_, momentum_copy
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward


def test_queue_fifo_and_wraparound():
    q = KeyQueue(5, 2)
    a = torch.arange(6.0).view(3, 2)
    q.enqueue(a, gather=False)
    assert torch.equal(q.keys[:3], a) and int(q.ptr) == 3
    assert torch.equal(q.valid(), a)  # only what was written, before the ring is full
    b = torch.arange(100.0, 106.0).view(3, 2)
    q.enqueue(b, gather=False)  # slots 3, 4, then wraps to 0
    assert torch.equal(q.keys[3:5], b[:2]) and torch.equal(q.keys[0], b[2])
    assert int(q.filled) == 5 and torch.equal(q.valid(), q.keys)
    assert torch.equal(q.keys[1:3], a[1:]) and int(q.ptr) == 1
    assert {"keys", "ptr"} <= set(q.state_dict())


def test_ema_update_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)


def test_momentum_copy_is_frozen_and_independent():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    k = momentum_copy(net)
    assert all(not p.requires_grad for p in k.parameters())
    k(torch.randn(4, 2))
    assert not torch.equal(k[1].running_mean, net[1].running_mean)  # own BN statistics


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_shuffle_bn_equals_unshuffled_with_one_split():
    enc, x = encoder(), torch.randn(8, 4)
    g = torch.Generator().manual_seed(1)
    out = shuffle_bn_forward(enc, x, distributed=False, splits=1, generator=g)
    assert torch.allclose(out, enc(x), atol=1e-6)


def test_shuffle_bn_splits_use_per_chunk_statistics():
    enc, x = encoder(), torch.randn(8, 4)
    out = shuffle_bn_forward(enc, x, distributed=False, splits=2, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    expected = torch.empty(8, 3)
    expected[perm] = torch.cat([enc(x[perm[:4]]), enc(x[perm[4:]])])
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, enc(x), atol=1e-4)  # BN over a random half differs
    enc.eval()
    assert torch.allclose(shuffle_bn_forward(enc, x, False, 2), enc(x), atol=1e-6)


def test_lr_schedule():
    kw = {"base_lr": 1.0, "total_steps": 100, "warmup_steps": 10, "milestones": [0.5], "gamma": 0.1}
    assert lr_at(step=0, schedule="cosine", **kw) == 0.1
    assert lr_at(step=9, schedule="cosine", **kw) == 1.0
    assert abs(lr_at(step=55, schedule="cosine", **kw) - 0.5) < 1e-9
    assert lr_at(step=99, schedule="cosine", **kw) < 0.01
    assert lr_at(step=60, schedule="step", **kw) == 0.1 * 1.0
