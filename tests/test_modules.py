from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from vidssl.engine.optim import build_optimizer, lr_at, param_groups
from vidssl.models.heads import ParallelHeads, mlp
from vidssl.modules.batch_norm import batch_norm_per_group, forward_per_group
from vidssl.modules.momentum import ema_update_, momentum_copy, parameter_list
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation
from vidssl.modules.views import cat_views


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


@pytest.mark.parametrize("size, batches", [(5, [3, 3, 2, 7, 4]), (8, [4, 4, 4]), (6, [6, 1, 5, 6])])
def test_queue_host_pointer_writes_equal_device_index_writes(monkeypatch, size, batches):
    """On CPU the pointer is read on the host and the keys copied by slices; on a device, and in a
    compiled graph, the slots are indexed there. Both leave the same keys, pointer and count after
    every step: filling, wrapping, a batch of the ring's size and one larger than the ring."""
    host, indexed = KeyQueue(size, 3), KeyQueue(size, 3)
    g = torch.Generator().manual_seed(0)
    for n in batches:
        keys = torch.randn(n, 3, generator=g)
        host.enqueue(keys, gather=False)
        with monkeypatch.context() as m:
            m.setattr(torch.compiler, "is_compiling", lambda: True)  # the device's path, on the CPU
            indexed.enqueue(keys, gather=False)
        state = indexed.state_dict()
        for name, buffer in host.state_dict().items():
            assert torch.equal(buffer, state[name]), (n, name)
    assert int(host.filled) == size and 0 <= int(host.ptr) < size


def test_ema_update_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)


def test_parameter_list_is_parameters_in_order_and_updates_shared_weights_once():
    shared = nn.Linear(3, 3, bias=False)  # a None bias, and one module registered twice
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(shared, nn.BatchNorm1d(3)), shared, nn.Linear(3, 1))
    assert [id(p) for p in parameter_list(net)] == [id(p) for p in net.parameters()]
    target = momentum_copy(net)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, net, 0.5)  # a parameter listed twice would be averaged twice
    for b, t, o in zip(before, target.parameters(), net.parameters(), strict=True):
        assert torch.allclose(t, 0.5 * b + 0.5 * o)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Linear(5, 2))


def per_parameter_ema(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """The reference: one lerp per parameter, as MoCo's code writes the update."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, 1 - momentum)


def train_online(online: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    online(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_ema_in_flat_buffers_is_bit_identical_to_a_lerp_per_parameter_and_follows_the_optimizer():
    online = conv_net()
    target = momentum_copy(online)
    online_ref, target_ref = copy.deepcopy(online), copy.deepcopy(target)
    opt = torch.optim.SGD(online.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(online_ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(4):  # the optimizer updates the online network's flat views in place
        train_online(online, opt, step)
        train_online(online_ref, opt_ref, step)
        ema_update_(target, online, 0.9)
        per_parameter_ema(target_ref, online_ref, 0.9)
        for a, b in zip([*target.parameters(), *online.parameters()],
                        [*target_ref.parameters(), *online_ref.parameters()], strict=True):
            assert torch.equal(a, b)
    pair = target._ema_flat_pair
    assert pair.flat_target is not None  # it did run on flat buffers: every parameter is a view of one
    assert {p.untyped_storage().data_ptr() for p in target.parameters()} == {pair.flat_target.data_ptr()}
    assert {p.untyped_storage().data_ptr() for p in online.parameters()} == {pair.flat_online.data_ptr()}
    assert all(p.grad is None or p.grad.shape == p.shape for p in online.parameters())
    # a deep copy of both (or a pickled one) pairs its own parameters, not the originals'
    copied_target, copied_online = pickle.loads(pickle.dumps(copy.deepcopy(nn.ModuleList([target, online]))))
    ema_update_(copied_target, copied_online, 0.5)
    per_parameter_ema(target_ref, online_ref, 0.5)
    for a, b, original in zip(copied_target.parameters(), target_ref.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(original, b)


def test_ema_follows_moved_and_replaced_parameters():
    online = conv_net()
    target = momentum_copy(online)
    ema_update_(target, online, 0.5)
    # re-allocated in place (as .to(device) or a channels-last conversion does): a new layout on both sides
    for net in (online, target):
        net[0].weight.data = net[0].weight.data.contiguous(memory_format=torch.channels_last)
    # replaced objects (as load_state_dict(assign=True) does), on both networks
    online[3].weight = nn.Parameter(torch.randn(5, 144))
    target[3].weight = nn.Parameter(torch.randn(5, 144), requires_grad=False)
    target_ref = copy.deepcopy(target)
    ema_update_(target, online, 0.5)
    per_parameter_ema(target_ref, online, 0.5)
    for a, b in zip(target.parameters(), target_ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert target[0].weight.is_contiguous(memory_format=torch.channels_last)  # its layout is kept
    assert target[3].weight.untyped_storage().data_ptr() == target._ema_flat_pair.flat_target.data_ptr()
    # a different online network for the same target is paired anew
    other = conv_net()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1)
    other[3].weight = nn.Parameter(torch.randn(5, 144))
    target_ref = copy.deepcopy(target)
    ema_update_(target, other, 0.5)
    per_parameter_ema(target_ref, other, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), target_ref.parameters(), strict=True))


def test_ema_of_parameters_that_cannot_share_a_buffer_falls_back_to_a_lerp_per_parameter():
    online = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2).double())
    target = momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1)
    target_ref = copy.deepcopy(target)
    ema_update_(target, online, 0.75)
    per_parameter_ema(target_ref, online, 0.75)
    assert target._ema_flat_pair.flat_target is None
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), target_ref.parameters(), strict=True))


def test_ema_between_the_online_forward_and_its_backward_leaves_the_gradients_alone():
    """SeCo and VCLR update the momentum encoder after the online forward: moving the online
    parameters into their flat buffer there must not disturb the backward pass."""
    online = conv_net()
    target = momentum_copy(online)
    x = torch.randn(4, 3, 8, 8)
    expected = torch.autograd.grad(online(x).square().sum(), list(online.parameters()))
    loss = online(x).square().sum()
    ema_update_(target, online, 0.9)  # the first update: builds the flat buffers
    assert target._ema_flat_pair.flat_target is not None
    for g, p in zip(expected, online.parameters(), strict=True):
        assert torch.equal(torch.autograd.grad(loss, p, retain_graph=True)[0], g)


def test_cat_views_is_a_view_for_a_collated_batch_and_torch_cat_otherwise():
    stacked = torch.randn(4, 3, 2, 5)
    views = list(stacked.unbind(0))
    joined = cat_views(views[1:])
    assert torch.equal(joined, torch.cat(views[1:])) and joined.data_ptr() == views[1].data_ptr()
    # as a loader worker hands them over: tensors of their own on the batch's storage
    handed_over = [torch.empty(0).set_(stacked.untyped_storage(), v.storage_offset(), v.shape, v.stride())
                   for v in views]
    joined = cat_views(handed_over[:3])
    assert torch.equal(joined, torch.cat(views[:3])) and joined.data_ptr() == views[0].data_ptr()
    for parts in ([views[0], views[2]], [views[2], views[1]], [views[0], torch.randn(3, 2, 5)],
                  [views[0].clone(), views[1].clone()], list(stacked.transpose(0, 1)[:, 0:2].unbind(0))):
        out = cat_views(parts)  # not adjacent, out of order, separate tensors, strided views: a copy
        assert torch.equal(out, torch.cat(parts)) and out.data_ptr() != parts[0].data_ptr()
    leaves = list(stacked.clone().requires_grad_(True).unbind(0))
    joined = cat_views(leaves[:2])  # views with a gradient history: torch.cat
    assert joined.data_ptr() != leaves[0].data_ptr()
    joined.sum().backward()


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


def test_parallel_heads_are_independent_mlps():
    torch.manual_seed(0)
    heads = ParallelHeads(["inter", "intra", "order"], 6, 5, 4)
    x = torch.randn(7, 6)
    out = heads(x)
    assert out.shape == (7, 3, 4)
    for i in range(3):  # head i alone: its rows of the first layer, its slice of the second
        w1, b1 = heads.weight1[5 * i:5 * (i + 1)], heads.bias1[5 * i:5 * (i + 1)]
        expected = torch.relu(x @ w1.T + b1) @ heads.weight2[i] + heads.bias2[4 * i:4 * (i + 1)]
        assert torch.allclose(out[:, i], expected, atol=1e-6)
    out[:, 1].sum().backward()  # one head's output has no gradient into the others' weights
    g1, g2 = heads.weight1.grad.view(3, 5, 6), heads.weight2.grad
    assert g1[1].abs().sum() > 0 and g1[[0, 2]].abs().sum() == 0 and g2[[0, 2]].abs().sum() == 0
    bound = 6 ** -0.5  # nn.Linear's initialisation: uniform within 1/sqrt(fan_in)
    assert heads.weight1.abs().max() <= bound and heads.weight1.abs().max() > 0.8 * bound
    assert heads.bias1.ndim == heads.bias2.ndim == 1  # biases stay out of weight decay (ndim < 2)


def test_parallel_heads_subsets_compute_only_their_heads():
    torch.manual_seed(0)
    heads = ParallelHeads(["inter", "intra", "order"], 6, 5, 4)
    x = torch.randn(7, 6)
    out = heads(x)
    for names, cols in ((["intra", "order"], [1, 2]), (["order", "inter"], [2, 0]), (["intra"], [1])):
        sub = heads(x, names)  # adjacent heads (weight views) and a reordered, non-adjacent pair (copies)
        assert sub.shape == (7, len(names), 4) and torch.allclose(sub, out[:, cols], atol=1e-6)
        heads.zero_grad()
        sub.sum().backward()
        used = heads.weight2.grad.flatten(1).abs().sum(1) > 0
        assert used.tolist() == [i in cols for i in range(3)]  # gradient only into the heads it ran


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


def test_parallel_heads_load_the_per_head_checkpoints_of_earlier_versions():
    torch.manual_seed(0)
    names = ["inter", "intra", "order"]
    old = nn.Module()
    old.heads = nn.ModuleDict({name: mlp([6, 5, 4]) for name in names})  # the layout before ParallelHeads
    new = nn.Module()
    new.heads = ParallelHeads(names, 6, 5, 4)
    new.load_state_dict(old.state_dict(), strict=True)
    x = torch.randn(3, 6)
    for i, name in enumerate(names):
        assert torch.allclose(new.heads(x)[:, i], old.heads[name](x), atol=1e-6)


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

    for method, heads in (("seco", lambda m: [m.encoder_q.heads]), ("moco", lambda m: [m.encoder_q.heads]),
                          ("vclr", lambda m: [m.encoder_q.heads.frame])):
        model = build_method(load_config(None, ["model.arch=tiny2d"], method), False)
        assert [h.hidden for h in heads(model)] == [128], method
        model = build_method(load_config(None, ["model.arch=tiny2d", f"{method}.head_hidden=40"], method), False)
        assert [h.hidden for h in heads(model)] == [40], method
        with pytest.raises(ConfigError, match=f"{method}.head_hidden must be positive"):
            load_config(None, [f"{method}.head_hidden=0"], method)
    vclr = build_method(load_config(None, ["model.arch=tiny2d"], "vclr"), False)
    assert vclr.encoder_q.heads.video[0].out_features == 128
