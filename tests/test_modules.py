from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidssl.engine.config import load_config
from vidssl.engine.optim import build_optimizer, lr_at, param_groups
from vidssl.models.heads import MultiHeadEncoder, mlp
from vidssl.modules.batch_norm import batch_norm_per_group, forward_per_group
from vidssl.modules.momentum import MomentumEncoders, ema_update_, momentum_copy
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation


def test_queue_fifo_and_wraparound():
    q = KeyQueue(5, 2)
    a = torch.arange(6.0).view(3, 2)
    q.enqueue(a, gather=False)
    assert torch.equal(q.keys[:3], a) and int(q.ptr) == 3
    assert q.filled_mask().tolist() == [True] * 3 + [False] * 2  # only what was written, before the ring is full
    b = torch.arange(100.0, 106.0).view(3, 2)
    q.enqueue(b, gather=False)  # slots 3, 4, then wraps to 0
    assert torch.equal(q.keys[3:5], b[:2]) and torch.equal(q.keys[0], b[2])
    assert int(q.filled) == 5 and bool(q.filled_mask().all())
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
    out = shuffle_bn_forward(enc, x, shuffle_permutation(8, False, g, x.device), distributed=False, splits=1)
    assert torch.allclose(out, enc(x), atol=1e-6)


def test_shuffle_bn_splits_use_per_chunk_statistics():
    enc, x = encoder(), torch.randn(8, 4)
    drawn = shuffle_permutation(8, False, torch.Generator().manual_seed(1), x.device)
    out = shuffle_bn_forward(enc, x, drawn, distributed=False, splits=2)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    expected = torch.empty(8, 3)
    expected[perm] = torch.cat([enc(x[perm[:4]]), enc(x[perm[4:]])])
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, enc(x), atol=1e-4)  # BN over a random half differs
    enc.eval()
    assert torch.allclose(shuffle_bn_forward(enc, x, drawn, False, 2), enc(x), atol=1e-6)


def test_lr_schedule():
    kw = {"base_lr": 1.0, "total_steps": 100, "warmup_steps": 10, "milestones": [0.5], "gamma": 0.1}
    assert lr_at(step=0, schedule="cosine", **kw) == 0.1
    assert lr_at(step=9, schedule="cosine", **kw) == 1.0
    assert abs(lr_at(step=55, schedule="cosine", **kw) - 0.5) < 1e-9
    assert lr_at(step=99, schedule="cosine", **kw) < 0.01
    assert lr_at(step=60, schedule="step", **kw) == 0.1 * 1.0


def test_fused_optimizer_matches_the_loop():
    torch.manual_seed(0)
    for name in ("sgd", "adam"):
        models = [nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)) for _ in range(2)]
        models[1].load_state_dict(models[0].state_dict())
        fused = build_optimizer(name, models[0], 0.1, 0.9, 1e-4)
        assert fused.defaults["fused"]
        loop = type(fused)(param_groups(models[1], 1e-4), lr=0.1, fused=False,
                           **({"momentum": 0.9} if name == "sgd" else {}))
        for _ in range(3):
            x = torch.randn(5, 4)
            for m, opt in zip(models, (fused, loop), strict=True):
                m(x).square().sum().backward()
                opt.step()
                opt.zero_grad()
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_decay_all_decays_biases_and_norms_as_the_official_code():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    for decay_all, decayed in ((False, 1), (True, 4)):  # the weight only, or weight, bias, gamma, beta
        groups = build_optimizer("sgd", model, 0.1, 0.9, 0.5, decay_all).param_groups
        assert sum(len(g["params"]) for g in groups if g["weight_decay"] == 0.5) == decayed
    # one SGD step with zero gradient: the bias shrinks by lr * wd only when everything is decayed
    with torch.no_grad():
        model[0].bias.fill_(1.0)
    opt = build_optimizer("sgd", model, 0.1, 0.0, 0.5, decay_all=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(model[0].bias, torch.full((3,), 1.0 - 0.1 * 0.5))
    assert load_config("seco_kinetics400").optim.decay_all and not load_config("corp_f_kinetics400").optim.decay_all


def test_queue_snapshot_is_a_copy_of_the_keys():
    queue = KeyQueue(8, 4)
    snapshot = queue.snapshot()
    assert torch.equal(snapshot, queue.keys) and snapshot.data_ptr() != queue.keys.data_ptr()
    queue.enqueue(torch.ones(2, 4), gather=False)
    assert not torch.equal(snapshot, queue.keys)  # the loss's copy keeps this step's keys


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm1d(5), (12, 5)),
    (lambda: nn.BatchNorm1d(5, momentum=0.3), (12, 5, 4)),
    (lambda: nn.BatchNorm1d(5, affine=False), (12, 5)),
    (lambda: nn.BatchNorm1d(5, momentum=None), (12, 5)),
    (lambda: nn.BatchNorm1d(5, track_running_stats=False), (12, 5)),
    (lambda: nn.BatchNorm3d(3), (6, 3, 2, 4, 4)),
])
def test_batch_norm_per_group_equals_one_call_per_group(make, shape):
    """Output, input and parameter gradients, running statistics and the batch count are those of
    one call per group, one after another; in eval mode the groups share the running statistics."""
    torch.manual_seed(0)
    grouped = make()
    if grouped.affine:
        nn.init.uniform_(grouped.weight, 0.5, 1.5)
        nn.init.uniform_(grouped.bias, -0.5, 0.5)
    grouped.train()
    for _ in range(2):  # twice: the running statistics start from non-trivial values
        sequential = copy.deepcopy(grouped)
        x = (torch.randn(*shape) * 3 + torch.arange(shape[0]).view(-1, *[1] * (len(shape) - 1))).requires_grad_()
        expected = torch.cat([sequential(c) for c in x.chunk(3)])
        got = batch_norm_per_group(grouped, x, 3)
        assert torch.allclose(got, expected, atol=1e-5)
        w = torch.randn(shape)
        params_seq, params = list(sequential.parameters()), list(grouped.parameters())
        for a, e in zip(torch.autograd.grad((got * w).sum(), [x, *params]),
                        torch.autograd.grad((expected * w).sum(), [x, *params_seq]), strict=True):
            assert torch.allclose(a, e, atol=1e-4)
        for name, buf in sequential.named_buffers():
            assert torch.allclose(dict(grouped.named_buffers())[name].float(), buf.float(), atol=1e-6), name
    grouped.eval()
    x = torch.randn(*shape)
    if grouped.track_running_stats:
        assert torch.equal(batch_norm_per_group(grouped, x, 3), grouped(x))
    with pytest.raises(ValueError, match="13 samples do not split into 3 groups"):
        batch_norm_per_group(grouped.train(), torch.randn(13, *shape[1:]), 3)


def test_forward_per_group_runs_a_head_per_group():
    torch.manual_seed(0)
    head = mlp([6, 8, 4], batch_norm=True, last_bn=True).train()
    reference = copy.deepcopy(head)
    x = torch.randn(12, 6)
    assert torch.allclose(forward_per_group(head, x, 4), torch.cat([reference(c) for c in x.chunk(4)]), atol=1e-5)
    assert not torch.allclose(forward_per_group(head, x, 4), forward_per_group(head, x, 1), atol=1e-3)


def test_frame_heads_default_to_the_backbones_feature_size():
    """SeCo, VCLR and MoCo-v2 heads are ``D -> D -> d`` unless ``head_hidden`` is set (the papers'
    2048 -> 2048 -> 128 on ResNet-50); a width below 1 is refused with the key named."""
    from vidssl.engine.config import load_config
    from vidssl.engine.train import build_method
    from vidssl.errors import ConfigError

    for method in ("seco", "moco", "vclr"):
        for overrides, hidden in (([], 128), ([f"{method}.head_hidden=40"], 40)):
            model, _ = build_method(load_config(None, ["model.arch=tiny2d", *overrides], method), False)
            heads = model.encoders.encoder_q.heads
            assert {name: (h[0].in_features, h[0].out_features, h[2].out_features) for name, h in heads.items()} \
                == {name: (128, hidden, 128) for name in heads}, method
        with pytest.raises(ConfigError, match=f"{method}.head_hidden must be positive"):
            load_config(None, [f"{method}.head_hidden=0"], method)


def test_multi_head_encoder_heads_are_independent_normalised_mlps():
    torch.manual_seed(0)
    backbone = nn.Linear(5, 6)
    backbone.feature_dim = 6
    encoder = MultiHeadEncoder(backbone, ["inter", "intra", "order"], 8, 4)
    h = torch.randn(7, 6)
    out = encoder.project(h)
    for name, head in encoder.heads.items():
        expected = torch.relu(h @ head[0].weight.T + head[0].bias) @ head[2].weight.T + head[2].bias
        assert torch.allclose(out[name], expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert list(encoder.project(h, ["order"])) == ["order"]
    out["intra"].sum().backward()  # one head's output has no gradient into the others' weights
    assert encoder.heads["intra"][0].weight.grad.abs().sum() > 0
    assert encoder.heads["inter"][0].weight.grad is None and encoder.heads["order"][0].weight.grad is None


def test_momentum_encoders_update_the_copy_then_encode_the_keys_with_it():
    """``key_features``: first the EMA (MoCo eq. 2), then the momentum backbone on the keys; with one
    shuffle-BN split the features equal the momentum backbone's on the batch unshuffled."""
    torch.manual_seed(0)
    online = nn.Module()
    online.backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    encoders = MomentumEncoders(online, 0.9, 1, distributed=False)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    expected_params = [0.9 * k + 0.1 * q for k, q in zip(encoders.encoder_k.parameters(), online.parameters(),
                                                           strict=True)]
    reference = copy.deepcopy(encoders.encoder_k.backbone)
    x = torch.randn(8, 4)
    features = encoders.key_features(x, encoders.key_permutation(8, torch.Generator().manual_seed(0), x.device))
    for p, e in zip(encoders.encoder_k.parameters(), expected_params, strict=True):
        assert torch.allclose(p, e)
    with torch.no_grad():
        for p, e in zip(reference.parameters(), expected_params, strict=True):
            p.copy_(e)
        assert torch.allclose(features, reference(x), atol=1e-6)
    assert not features.requires_grad
