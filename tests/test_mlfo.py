from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.engine.config import load_config
from vidssl.losses.contrastive import info_nce
from vidssl.losses.mlfo import (
    graph_contrast,
    graph_loss,
    graph_targets,
    instance_loss,
    motion_contrast,
    sinkhorn,
    swapped_prediction_loss,
    timestamp_retrieval_loss,
)
from vidssl.methods.mlfo import MLFO, MLFOConfig
from vidssl.models.backbones import Backbone
from vidssl.models.temporal import (
    MotionBranch,
    MotionExcitation,
    order_indices,
    pooled_depthwise_conv,
    temporal_augment,
    time_order,
)

SMALL = {"clip_len": 4, "proj_hidden": 32, "proj_dim": 16, "prototypes": 6, "score_queue": 16, "me_reduction": 4,
         "retrieval_levels": ["low"]}


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def views(b: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 4, 16, 16, generator=g) for _ in range(3)]


def test_sinkhorn_marginals():
    scores = unit(12, 8, seed=0) @ unit(5, 8, seed=1).T  # 12 samples, 5 prototypes
    for iterations in (1, 3, 200):
        q = sinkhorn(scores, eps=0.05, iterations=iterations)
        assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)  # every sample a distribution
        assert (q >= 0).all()
    q = sinkhorn(scores, eps=0.05, iterations=200)
    assert torch.allclose(q.sum(0), torch.full((5,), 12 / 5), atol=1e-3)  # equipartition
    plain = torch.softmax(scores / 0.05, dim=1).sum(0)
    three = sinkhorn(scores, eps=0.05, iterations=3).sum(0)
    assert (three - 12 / 5).abs().max() < (plain - 12 / 5).abs().max()


def test_sinkhorn_is_stable_for_large_scores():
    q = sinkhorn(torch.tensor([[50.0, -50.0], [-50.0, 50.0], [50.0, 49.0]]), eps=0.05, iterations=3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(3))


def test_masked_sinkhorn_is_the_problem_on_the_valid_rows():
    """A fixed-size problem with some samples masked out: the valid rows' codes are those of the
    problem on them alone, whatever the masked rows hold; the masked rows get zero codes."""
    scores = unit(10, 8, seed=0) @ unit(5, 8, seed=1).T
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    alone = sinkhorn(scores[valid], eps=0.05, iterations=3)
    for junk in (0.0, 1e4, -1e4):
        q = sinkhorn(torch.where(valid[:, None], scores, junk), eps=0.05, iterations=3, valid=valid)
        assert torch.allclose(q[valid], alone, atol=1e-6)
        assert torch.equal(q[~valid], torch.zeros(3, 5))


def test_sinkhorn_solves_leading_dimensions_as_separate_problems():
    scores = torch.stack([unit(7, 5, seed=1), 3 * unit(7, 5, seed=2)])  # different scales: own stabilisers
    valid = torch.tensor([True, True, False, True, True, False, True])
    for mask in (None, valid):
        both = sinkhorn(scores, eps=0.05, iterations=3, valid=mask)
        for i in range(2):
            assert torch.allclose(both[i], sinkhorn(scores[i], eps=0.05, iterations=3, valid=mask), atol=1e-6)


def test_codes_use_only_the_filled_part_of_the_score_queue():
    torch.manual_seed(0)
    cfg = MLFOConfig(**SMALL, queue_start_epoch=1)
    model = MLFO(cfg, Backbone("tiny3d"))
    model.set_epoch(0, 4)
    model(views(), {}, torch.Generator().manual_seed(0))
    first, second = model.score_queues
    assert int(first.filled) == int(second.filled) == 4 < first.size  # a quarter full: 4 videos per view
    assert not torch.allclose(first.keys[:4], second.keys[:4])  # each view queues its own scores
    model.set_epoch(1, 4)
    scores = torch.stack([unit(4, 6, seed=10), unit(4, 6, seed=11)])  # two views: one problem each
    codes = model.codes(scores)
    for view, queue in enumerate(model.score_queues):
        expected = sinkhorn(torch.cat([scores[view], queue.keys[:4]]), cfg.sinkhorn_eps, cfg.sinkhorn_iterations)[:4]
        assert torch.allclose(codes[view], expected, atol=1e-6)


def reference_instance_loss(z1, z2, tau):
    """Eq. 2-3 with explicit sums (float64): sum over videos and views, divided by the videos."""
    h = lambda u, v: math.exp(float(u @ v) / tau)  # noqa: E731
    n, total = len(z1), 0.0
    for i in range(n):
        for za in (z1[i], z2[i]):
            denom = sum(h(z1[i], z2[i]) if j == i else h(za, z1[j]) + h(za, z2[j]) for j in range(n))
            total -= math.log(h(z1[i], z2[i]) / denom)
    return total / n


def test_instance_loss_matches_eq_2_3():
    z1, z2 = unit(5, 8, seed=2).double(), unit(5, 8, seed=3).double()
    got = instance_loss(z1, z2, z1, z2, torch.arange(5), tau=0.5)
    assert got.item() == pytest.approx(reference_instance_loss(z1, z2, 0.5), rel=1e-5)


def test_graph_loss_with_one_hot_targets_is_the_instance_loss():
    z1, z2 = unit(6, 8, seed=4), unit(6, 8, seed=5)
    idx = torch.arange(6)
    onehot = graph_targets(z1, z2, z1, z2, torch.rand(6, 3), torch.rand(6, 3), idx, "onehot")
    assert torch.equal(onehot, torch.eye(6))
    assert torch.allclose(graph_loss(onehot, z1, z2, z1, z2, idx, 0.07), instance_loss(z1, z2, z1, z2, idx, 0.07))


def test_swapped_prediction_against_a_hand_written_reference():
    """L_sem (MLFO eq. 4): -sum_k s1_k log p2_k - sum_k s2_k log p1_k, p = softmax(scores / T),
    mean over samples; written out with explicit exponentials."""
    g = torch.Generator().manual_seed(0)
    scores1, scores2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    codes1, codes2 = torch.rand(5, 7, generator=g), torch.rand(5, 7, generator=g)
    codes1, codes2 = codes1 / codes1.sum(1, keepdim=True), codes2 / codes2.sum(1, keepdim=True)
    t, total = 0.1, 0.0
    for i in range(5):
        for codes, scores in ((codes1, scores2), (codes2, scores1)):
            e = [math.exp(float(x) / t) for x in scores[i]]
            total -= sum(float(codes[i, k]) * math.log(e[k] / sum(e)) for k in range(7))
    assert math.isclose(float(swapped_prediction_loss(scores1, scores2, codes1, codes2, t)), total / 5, rel_tol=1e-5)


def test_graph_loss_with_soft_targets_against_a_hand_written_reference():
    """L_mul (eq. 10) with soft targets E: -sum_j E_ij log q_ij for each view as anchor, where
    q_ij puts mass h(a_i, z_j^1) + h(a_i, z_j^2) on video j != i and h(z_i^1, z_i^2) on i, summed
    over the two views, mean over videos."""
    g = torch.Generator().manual_seed(1)
    z1, z2 = F.normalize(torch.randn(4, 6, generator=g), dim=1), F.normalize(torch.randn(4, 6, generator=g), dim=1)
    targets = torch.rand(4, 4, generator=g)
    targets = targets / targets.sum(1, keepdim=True)
    tau, total = 0.07, 0.0

    def h(u: torch.Tensor, v: torch.Tensor) -> float:
        return math.exp(float(u @ v) / tau)

    for i in range(4):
        for anchor in (z1[i], z2[i]):
            mass = [h(z1[i], z2[i]) if j == i else h(anchor, z1[j]) + h(anchor, z2[j]) for j in range(4)]
            total -= sum(float(targets[i, j]) * math.log(mass[j] / sum(mass)) for j in range(4))
    got = graph_loss(targets, z1, z2, z1, z2, torch.arange(4), tau)
    assert math.isclose(float(got), total / 4, rel_tol=1e-5)


def test_graph_contrast_is_the_official_form_by_hand():
    """The code's L_mul: -log softmax_j(q_i·k_j / τ) * E_ij averaged over every (i, j)."""
    g = torch.Generator().manual_seed(2)
    q, k = F.normalize(torch.randn(3, 5, generator=g), dim=1), F.normalize(torch.randn(3, 5, generator=g), dim=1)
    targets = torch.rand(3, 3, generator=g)
    targets = targets / targets.sum(1, keepdim=True)
    total = 0.0
    for i in range(3):
        e = [math.exp(float(q[i] @ k[j]) / 0.07) for j in range(3)]
        total -= sum(float(targets[i, j]) * math.log(e[j] / sum(e)) for j in range(3))
    assert math.isclose(float(graph_contrast(targets, q, k, 0.07)), total / 9, rel_tol=1e-5)


def test_motion_contrast_is_the_official_form_by_hand():
    """The code's L_aug: the positive against the anchor's time-transformed copies and the other
    videos' clips (the anchor's own video's clips left out), mean over anchors."""
    g = torch.Generator().manual_seed(3)
    a, p = F.normalize(torch.randn(2, 4, generator=g), dim=1), F.normalize(torch.randn(2, 4, generator=g), dim=1)
    t = F.normalize(torch.randn(2, 2, 4, generator=g), dim=2)
    others = F.normalize(torch.randn(4, 4, generator=g), dim=1)  # video 0: rows 0, 2; video 1: rows 1, 3
    own = torch.tensor([[True, False, True, False], [False, True, False, True]])
    total = 0.0
    for i in range(2):
        pos = math.exp(float(a[i] @ p[i]) / 0.07)
        negs = [math.exp(float(a[i] @ x) / 0.07) for x in t[i]]
        negs += [math.exp(float(a[i] @ others[j]) / 0.07) for j in range(4) if not own[i, j]]
        total -= math.log(pos / (pos + sum(negs)))
    assert math.isclose(float(motion_contrast(a, p, t, others, own, 0.07)), total / 2, rel_tol=1e-5)


def test_graph_target_properties():
    torch.manual_seed(0)
    n, eta, tau = 10, 0.08, 0.2
    z1, z2 = unit(n, 8, seed=6), unit(n, 8, seed=7)
    z2 = F.normalize(z1 + 0.3 * z2, dim=1)  # views alike, as after some training
    codes = torch.softmax(torch.randn(n, 3) * 3, dim=1)  # three pseudo-classes
    idx = torch.arange(n)
    cls = codes.argmax(1)
    same_class = cls[:, None] == cls[None, :]
    # eq. 8 by hand: the ratio W(i, j) / sum_j W(i, j)
    h = lambda u, v: torch.exp(u @ v / tau)  # noqa: E731
    w = torch.stack([torch.stack([h(z1[i], z2[i]) if i == j else
                                  (h(z1[i], z1[j]) + h(z1[i], z2[j]) + h(z2[i], z1[j]) + h(z2[i], z2[j])) / 4
                                  for j in range(n)]) for i in range(n)])
    ratio = w / w.sum(1, keepdim=True)
    below = (ratio < eta) & ~torch.eye(n, dtype=torch.bool)
    assert below.any() and (~below & ~torch.eye(n, dtype=torch.bool)).any()  # the threshold matters here
    for kind in ("instance", "semantic", "combined"):
        e = graph_targets(z1, z2, z1, z2, codes, codes, idx, kind, tau=tau, eta=eta)
        assert not e.requires_grad
        assert torch.allclose(e.sum(1), torch.ones(n), atol=1e-6)
        assert (e.diagonal() > 0).all()  # the diagonal is kept
        if kind in ("instance", "combined"):
            assert (e[below] == 0).all()  # zero below eta
        if kind in ("semantic", "combined"):
            assert (e[~same_class] == 0).all()  # zero across pseudo-classes
    combined = graph_targets(z1, z2, z1, z2, codes, codes, idx, "combined", tau=tau, eta=eta)
    expected = torch.where(below | ~same_class, 0.0, ratio)
    assert torch.allclose(combined, expected / expected.sum(1, keepdim=True), atol=1e-5)  # eq. 9
    semantic = graph_targets(z1, z2, z1, z2, codes, codes, idx, "semantic")
    assert torch.allclose(semantic, same_class.float() / same_class.sum(1, keepdim=True))


def test_timestamp_retrieval_loss_against_a_reference():
    short, long = unit(2, 3, 8, seed=8), unit(2, 6, 8, seed=9)
    tau, offset = 0.1, 2
    fwd, bwd = [], []
    for b in range(2):
        for k in range(3):
            fwd.append(-torch.log_softmax(long[b] @ short[b, k] / tau, 0)[offset + k])
            bwd.append(-torch.log_softmax(short[b] @ long[b, offset + k] / tau, 0)[k])
    expected = 0.5 * (torch.stack(fwd).mean() + torch.stack(bwd).mean())
    assert torch.allclose(timestamp_retrieval_loss(short, long, offset, tau), expected, atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        timestamp_retrieval_loss(short, long, 4, tau)


def test_motion_excitation_sees_time_order_and_pooling_alone_does_not():
    torch.manual_seed(0)
    f = torch.randn(3, 32, 4, 5, 5)
    with_me = MotionBranch(32, 16, 8, excitation=True, reduction=4)
    identity = MotionBranch(32, 16, 8, excitation=False)
    assert not torch.allclose(with_me(f), with_me(temporal_augment(f, "reverse")), atol=1e-4)
    assert torch.allclose(identity(f), identity(temporal_augment(f, "reverse")), atol=1e-6)
    shuffled = temporal_augment(f, "shuffle", torch.Generator().manual_seed(0))
    assert torch.allclose(identity(f), identity(shuffled), atol=1e-6)
    me = MotionExcitation(32, 4)
    assert me(f).shape == f.shape
    static = f[:, :, :1].expand(-1, -1, 4, -1, -1).contiguous()  # no motion: the excitation is weaker
    assert not torch.allclose(me(static)[:, :, 0], me(static)[:, :, -1])  # the last step has no successor


def test_motion_branch_on_pooled_maps_equals_the_full_excited_maps():
    """``reordered`` pools before exciting, squeezes once per clip for every time order and runs
    every (clip, order) in one pass; the result must be the branch of eq. 11 computed on each
    reordered, excited full map in its own call: the same embeddings, gradients and running
    statistics of the expand's and the head's BatchNorms (the squeeze's advance once per clip)."""
    torch.manual_seed(0)
    f = torch.randn(8, 32, 6, 5, 5, requires_grad=True)  # two clips' batches of 4
    branch = MotionBranch(32, 16, 8, excitation=True, reduction=4).train()
    reference = copy.deepcopy(branch)
    g = torch.Generator().manual_seed(1)
    orders = [[None, time_order("reverse", 6), time_order("shuffle", 6, g)],
              [None, time_order("shuffle", 6, g), time_order("reverse", 6)]]

    def full(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(reference.head(reference.excite(x).flatten(2).mean(-1)), dim=-1)

    expected = torch.stack([torch.stack([full(clip if o is None else clip[:, :, o]) for o in clip_orders], dim=1)
                            for clip, clip_orders in zip(f.chunk(2), orders, strict=True)])
    got = branch.reordered(f, order_indices(orders, 6, f.device))
    assert got.shape == (2, 4, 3, 8)
    assert torch.allclose(got, expected, atol=1e-5)
    weights = torch.randn(expected.shape, generator=g)
    grads = torch.autograd.grad((expected * weights).sum(), [f, *reference.parameters()])
    for a, e in zip(torch.autograd.grad((got * weights).sum(), [f, *branch.parameters()]), grads, strict=True):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-4)
    for bn, ref in ((branch.excite.expand[1], reference.excite.expand[1]), (branch.head[1], reference.head[1])):
        assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6)
        assert torch.allclose(bn.running_var, ref.running_var, atol=1e-6)
        assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 6
    assert int(branch.excite.squeeze[1].num_batches_tracked) == 2
    assert torch.allclose(branch(f[:4]), full(f[:4]), atol=1e-5)


def test_motion_excitation_equals_tea_with_convolutions():
    """The matrix-product squeeze/expand and the pooled motion give TEA's module computed with its
    convolutions on full maps: the same output and the same gradients."""
    torch.manual_seed(0)
    me = MotionExcitation(32, 4).train()
    x = torch.randn(3, 32, 5, 6, 6, requires_grad=True)

    def tea(x: torch.Tensor) -> torch.Tensor:
        squeezed = me.squeeze(x)  # nn.Conv3d + BatchNorm3d
        b, r, t, h, w = squeezed.shape
        later = torch.stack([me.transform(squeezed[:, :, k + 1]) for k in range(t - 1)], dim=2)
        motion = torch.cat([later - squeezed[:, :, :-1], torch.zeros_like(squeezed[:, :, :1])], dim=2)
        return x + x * (torch.sigmoid(me.expand(F.adaptive_avg_pool3d(motion, (t, 1, 1)))) - 0.5)

    expected = tea(x)
    grads = torch.autograd.grad(expected.square().sum(), [x, *me.parameters()])
    got = me(x)
    assert torch.allclose(got, expected, atol=1e-5)
    for g, e in zip(torch.autograd.grad(got.square().sum(), [x, *me.parameters()]), grads, strict=True):
        assert torch.allclose(g, e, atol=1e-4, rtol=1e-4)


def test_retrieval_pools_pairs_of_steps_like_avg_pool3d():
    """L_ret pools pairs of a clip's steps after the spatial mean: equal to ``avg_pool3d`` on the maps."""
    torch.manual_seed(0)
    model = MLFO(MLFOConfig(**SMALL), Backbone("tiny3d"))
    f1, f2, whole = torch.randn(3, 2, 32, 4, 5, 5).unbind(0)
    head = model.steps["low"]
    long = head(whole)
    expected = 0.5 * (timestamp_retrieval_loss(head(F.avg_pool3d(f1, (2, 1, 1))), long, 0, model.cfg.tau)
                      + timestamp_retrieval_loss(head(F.avg_pool3d(f2, (2, 1, 1))), long, 2, model.cfg.tau))
    steps = torch.cat([f1, f2, whole]).mean((3, 4))  # the spatial means per time step
    assert torch.allclose(model.retrieval_loss("low", steps), expected, atol=1e-6)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_motion_loss_uses_orders_drawn_level_after_level_clip_1_first(form):
    """MLFO draws every temporal order up front (outside compiled graphs); the L_aug terms must be
    eq. 11-12 on the orders a generator gives in that sequence (the code's form: the other videos'
    clips are negatives too, and the level's weight applies)."""
    torch.manual_seed(0)
    model = MLFO(MLFOConfig(**SMALL, temporal_levels=["low", "mid"], loss_form=form), Backbone("tiny3d")).train()
    model.set_epoch(3, 4)
    clips = [torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    _, parts = model(clips, {}, torch.Generator().manual_seed(7))
    maps = model.encoder.forward_levels(torch.cat(clips))
    g = torch.Generator().manual_seed(7)
    for lv in ("low", "mid"):
        f1, f2 = maps[lv][:2], maps[lv][2:4]
        t = f1.shape[2]
        orders = [[None] + [time_order(a, t, g) for a in ("reverse", "shuffle")] for _ in range(2)]
        e1, e2 = (model.motion[lv].reordered(f, order_indices([o], t, f.device))[0]
                  for f, o in zip((f1, f2), orders, strict=True))
        tau = model.cfg.tau
        if form == "paper":
            expected = info_nce(e1[:, 0], e2[:, 0], e1[:, 1:], tau) + info_nce(e2[:, 0], e1[:, 0], e2[:, 1:], tau)
        else:  # both clips of the other video (2 videos: rows 0-1 clip 1, rows 2-3 clip 2)
            others = torch.cat([e1[:, 0], e2[:, 0]])
            own = torch.tensor([[True, False, True, False], [False, True, False, True]])
            expected = model.cfg.level_weight(lv) * (motion_contrast(e1[:, 0], e2[:, 0], e1[:, 1:], others, own, tau)
                                                     + motion_contrast(e2[:, 0], e1[:, 0], e2[:, 1:], others, own, tau))
        assert torch.allclose(parts[f"aug_{lv}"], model.cfg.aug_weight * expected, atol=1e-5)


def test_paper_form_l_aug_is_eq_11_12_by_hand():
    """MLFO eq. 11-12 written out: for each video i and each view a, -log h(ME(f1), ME(f2)) /
    (h(ME(f1), ME(f2)) + sum_k h(ME(f^a), ME(Aug_k(f^a)))), h(u, v) = exp(u.v / tau) on the
    branch's embeddings; averaged over the videos (the paper sums; the mean keeps the loss
    independent of the batch), summed over the two views."""
    torch.manual_seed(1)
    model = MLFO(MLFOConfig(**SMALL, temporal_levels=["low"], loss_form="paper"), Backbone("tiny3d")).train()
    model.set_epoch(3, 4)
    clips = [torch.randn(3, 3, 4, 16, 16, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    _, parts = model(clips, {}, torch.Generator().manual_seed(5))
    maps = model.encoder.forward_levels(torch.cat(clips))["low"]
    g = torch.Generator().manual_seed(5)
    t = maps.shape[2]
    embedded = []
    for f in (maps[:3], maps[3:6]):
        orders = [None] + [time_order(a, t, g) for a in ("reverse", "shuffle")]
        embedded.append(model.motion["low"].reordered(f, order_indices([orders], t, f.device))[0].tolist())
    tau, total = model.cfg.tau, 0.0
    for i in range(3):
        e1, e2 = embedded[0][i], embedded[1][i]  # [ME(f), ME(Aug_1(f)), ME(Aug_2(f))] per view
        h = math.exp(sum(u * v for u, v in zip(e1[0], e2[0], strict=True)) / tau)
        for own in (e1, e2):
            neg = sum(math.exp(sum(u * v for u, v in zip(own[0], aug, strict=True)) / tau) for aug in own[1:])
            total -= math.log(h / (h + neg))
    assert float(parts["aug_low"].detach()) == pytest.approx(model.cfg.aug_weight * total / 3, rel=1e-4)


def test_time_shuffle_never_returns_the_original_order():
    f = torch.arange(3.0).view(1, 1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert not torch.equal(temporal_augment(f, "shuffle", g), f)


def test_stage_switch_prototype_freeze_and_score_queue():
    torch.manual_seed(0)
    cfg = MLFOConfig(**SMALL, graph_start=0.5, freeze_prototypes_epochs=1, queue_start_epoch=1)
    model = MLFO(cfg, Backbone("tiny3d"))
    v = views()
    model.set_epoch(0, 4)  # stage one: no graph loss; prototypes frozen; queue filling, unused
    assert not model.graph_active
    loss, parts = model(v, {}, torch.Generator().manual_seed(0))
    assert not any(k.startswith("mul_") for k in parts)
    loss.backward()
    assert model.prototypes.grad is None
    assert [int(q.filled) for q in model.score_queues] == [4, 4]  # each view's scores of 4 videos
    model.zero_grad()
    model.set_epoch(2, 4)  # ceil(0.5 x 4) = 2: stage two
    assert model.graph_active
    loss, parts = model(v, {}, torch.Generator().manual_seed(0))
    assert {"mul_low", "mul_mid", "mul_high"} <= set(parts)
    loss.backward()
    assert model.prototypes.grad.abs().sum() > 0
    # after the warm-up the queued scores join the Sinkhorn problem and change the codes
    scores = torch.stack([unit(4, 6, seed=10), unit(4, 6, seed=11)])
    with_queue = model.codes(scores)
    model.set_epoch(0, 4)
    assert not torch.allclose(with_queue, model.codes(scores))
    for view in range(2):
        assert torch.allclose(model.codes(scores)[view],
                              sinkhorn(scores[view], cfg.sinkhorn_eps, cfg.sinkhorn_iterations))


@pytest.mark.parametrize("temporal,expected", [
    ("none", set()),
    ("input", {"aug_input"}),
    ("feature", {"aug_low", "aug_mid", "ret_low"}),
])
def test_temporal_modes(temporal, expected):
    torch.manual_seed(0)
    model = MLFO(MLFOConfig(**SMALL, temporal=temporal, graph_targets="none"), Backbone("tiny3d"))
    loss, parts = model(views(), {}, torch.Generator().manual_seed(0))
    assert set(parts) == {"ins", "sem"} | expected
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.net.conv1.weight.grad.abs().sum() > 0


def test_graph_ablation_levels():
    torch.manual_seed(0)
    model = MLFO(MLFOConfig(**SMALL, graph_levels=["high"], graph_targets="instance", graph_start=0.0,
                            temporal="none"), Backbone("tiny3d"))
    _, parts = model(views(), {}, None)
    assert set(parts) == {"ins", "sem", "mul_high"}
    assert "low" not in model.projectors  # no head for a level without a loss


def test_mul_high_is_the_official_graph_contrast_on_the_high_embeddings():
    """The code's L_mul at the high level: clip 1's embeddings against clip 2's, with the graph
    targets (weight 1); the paper's form is the soft cross-entropy over both clips."""
    for form, loss in (("code", lambda t, z1, z2: graph_contrast(t, z1, z2, 0.07)),
                       ("paper", lambda t, z1, z2: graph_loss(t, z1, z2, z1, z2, torch.arange(len(z1)), 0.07))):
        torch.manual_seed(0)
        model = MLFO(MLFOConfig(**SMALL, graph_levels=["high"], graph_targets="onehot", graph_start=0.0,
                                temporal="none", loss_form=form), Backbone("tiny3d")).eval()
        clips = views()
        _, parts = model(clips, {}, None)
        with torch.no_grad():
            maps = model.encoder.forward_levels(torch.cat(clips[:2]))["high"]
            z1, z2 = model.embed("high", maps.flatten(2).mean(-1), groups=2).chunk(2)
        assert torch.allclose(parts["mul_high"].detach(), loss(torch.eye(len(z1)), z1, z2), atol=1e-5), form


def test_retrieval_needs_an_even_number_of_steps():
    model = MLFO(MLFOConfig(**{**SMALL, "retrieval_levels": ["high"]}), Backbone("tiny3d"))
    with pytest.raises(ValueError, match="even number of time steps"):
        model(views(), {}, None)  # tiny3d's high level has 1 step for 4-frame clips


def test_bad_mlfo_config_names_the_key():
    from vidssl.errors import ConfigError

    with pytest.raises(ConfigError, match="mlfo.graph_levels"):
        load_config(None, ["mlfo.graph_levels=[low, top]"], "mlfo")
    with pytest.raises(ConfigError, match="mlfo.temporal"):
        load_config(None, ["mlfo.temporal=sideways"], "mlfo")


def test_mlfo_needs_a_3d_backbone():
    with pytest.raises(ValueError, match="3d backbone"):
        MLFO(MLFOConfig(**SMALL), Backbone("tiny2d"))


def test_cli_pretrain_mlfo_on_builtin_data(tmp_path):
    from vidssl.cli import main

    out = tmp_path / "mlfo"
    assert main(["pretrain", "--config", "mlfo_laptop", "--out", str(out), "train.max_steps=3",
                 "train.batch_size=8", "data.num_workers=0", "data.synthetic_videos=40", "train.epochs=2",
                 "train.log_every=1"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "ret_mid" in lines[-1]
    assert (out / "checkpoint.pt").is_file()


def test_mlfo_paper_configs():
    for name, epochs, milestone in (("mlfo_ucf101", 300, 0.6667), ("mlfo_kinetics400", 100, 0.7)):
        cfg = load_config(name)
        m = cfg.mlfo
        assert (cfg.model.arch, cfg.augment.size, cfg.train.batch_size) == ("r3d_18_hara", 112, 256)
        assert (cfg.augment.per_frame_gray, cfg.augment.per_frame_jitter, m.max_rate) == (True, True, 3.0)
        assert cfg.train.epochs == epochs
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.milestones) == ("adam", 1e-3, 1e-5,
                                                                                                [milestone])
        assert (m.clip_len, m.prototypes, m.score_queue, m.tau, m.sinkhorn_eps, m.sinkhorn_iterations) == (
            16, 1000, 1024, 0.07, 0.05, 3)
        assert (m.sem_weight, m.low_weight, m.mid_weight, m.high_weight) == (0.5, 0.3, 0.5, 1.0)


def test_level_channels_match_every_backbone():
    from vidssl.models.backbones import ARCHS

    for arch, (_, kind, _dim) in ARCHS.items():
        if arch == "resnet50":
            continue  # same code path as resnet18, slow to build
        net = Backbone(arch)
        x = torch.randn(1, 3, 8, 32, 32) if kind == "3d" else torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            levels = net.eval().forward_levels(x)
        assert {lv: m.shape[1] for lv, m in levels.items()} == net.level_channels, arch


@pytest.mark.parametrize("arch", ["r3d_18", "r3d_18_hara", "s3d"])
def test_mlfo_step_on_the_papers_backbones(arch):
    torch.manual_seed(0)
    cfg = MLFOConfig(**{**SMALL, "clip_len": 16, "retrieval_levels": ["low", "mid", "high"]}, graph_start=0.0)
    model = MLFO(cfg, Backbone(arch))
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(2, 3, 16, 32, 32, generator=g) for _ in range(3)]
    loss, parts = model(clips, {}, g)
    assert {"mul_low", "mul_mid", "aug_low", "aug_mid", "ret_low", "ret_mid", "ret_high"} <= set(parts)
    loss.backward()
    assert torch.isfinite(loss)


def test_compiled_step_compiles_once_per_stage_not_once_per_epoch():
    """The epoch reaches the step as three switches (stage two, the score queue, the prototype
    freeze): a compiled step builds new graphs when one of them flips, not at every epoch (dynamo
    would recompile each epoch and run eagerly once its recompile limit is reached)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    cfg = MLFOConfig(**SMALL, graph_start=0.25, freeze_prototypes_epochs=1, queue_start_epoch=2)
    model = MLFO(cfg, Backbone("tiny3d")).train()
    step = torch.compile(model, backend="eager", dynamic=False)
    v = views()
    graphs = []
    for epoch in range(6):  # of 8: prototypes free from epoch 1; stage two (ceil(0.25 x 8)) and the queue from 2
        model.set_epoch(epoch, 8)
        loss, _ = step(v, {}, torch.Generator().manual_seed(epoch))
        loss.backward()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] < graphs[1] < graphs[2]  # each stage change compiles (the test sees dynamo at work)
    assert graphs[3:] == [graphs[2]] * 3
    torch._dynamo.reset()


@pytest.mark.parametrize(("kernel", "padding", "size"),
                         [(3, 1, (5, 7)), (3, 0, (6, 4)), (5, 2, (4, 4)), (1, 0, (3, 5))])
def test_pooled_depthwise_conv_is_the_mean_of_the_convolution(kernel, padding, size):
    """The window sums give the spatial mean of the channel-wise convolution itself, and its
    gradients, with leading dimensions (time) left in place."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, kernel, padding=padding, groups=3, bias=False)
    x = torch.randn(2, 4, 3, *size, requires_grad=True)  # (B, T, C, H, W)
    expected = conv(x.flatten(0, 1)).mean((2, 3)).view(2, 4, 3)
    got = pooled_depthwise_conv(conv, x)
    assert got.shape == (2, 4, 3)
    assert torch.allclose(got, expected, atol=1e-6)
    weights = torch.randn(2, 4, 3)
    for a, e in zip(torch.autograd.grad((got * weights).sum(), [x, conv.weight]),
                    torch.autograd.grad((expected * weights).sum(), [x, conv.weight]), strict=True):
        assert torch.allclose(a, e, atol=1e-5)
    with pytest.raises(ValueError, match="channel-wise, stride-1"):
        pooled_depthwise_conv(nn.Conv2d(3, 3, kernel, stride=2, padding=padding, groups=3, bias=False), x)
