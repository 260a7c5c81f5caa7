from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidssl.engine.config import load_config
from vidssl.losses.corp import corp_m_decoupled_loss, corp_m_loss, corp_pair_labels, nt_xent
from vidssl.methods.corp import CORPConfig, CORPf, CORPm, SimCLR, SimCLRConfig
from vidssl.models.backbones import Backbone
from vidssl.models.relation import DecouplingAttention, MixedAttention

SMALL = {"proj_hidden": 32, "proj_dim": 16, "heads": 8, "mlp_hidden": 16, "clip_len": 4}


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_decoupling_attention_symmetry():
    head = DecouplingAttention(16, 8, 8, 16, 2)
    x, y = unit(5, 16, seed=0), unit(5, 16, seed=1)
    assert torch.allclose(head.symmetric(x, y), head.symmetric(y, x))
    assert torch.allclose(head.antisymmetric(x, y), -head.antisymmetric(y, x))
    logp = head(x, y)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(5), atol=1e-6)  # a 3-way distribution


def test_gradient_isolation_of_the_decoupled_head():
    head = DecouplingAttention(16, 8, 8, 16, 2)
    z = unit(6, 16, seed=2)
    i, j, labels = corp_pair_labels(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 10, 20, 5, 15, 0]))
    same, order = head.same_logit(z[i], z[j]), head.order_logit(z[i], z[j])
    # the decoupled form equals the 3-way cross-entropy on the head's factorised distribution
    assert torch.allclose(corp_m_decoupled_loss(same, order, labels), corp_m_loss(head(z[i], z[j]), labels), rtol=1e-5)
    corp_m_decoupled_loss(same, order, labels, ("contrast",)).backward(retain_graph=True)
    assert head.G.weight.grad.abs().sum() > 0
    assert head.P.weight.grad is None or head.P.weight.grad.abs().sum() == 0
    assert head.Q.weight.grad is None or head.Q.weight.grad.abs().sum() == 0
    head.zero_grad()
    corp_m_decoupled_loss(same, order, labels, ("order",)).backward()
    assert head.P.weight.grad.abs().sum() > 0 and head.Q.weight.grad.abs().sum() > 0
    assert head.G.weight.grad is None or head.G.weight.grad.abs().sum() == 0


def test_mixed_attention_shape_and_parts_sum_to_the_3way_loss():
    head = MixedAttention(16, heads=8, hidden=16, layers=3, num_outputs=3)
    z = unit(6, 16, seed=3)
    i, j, labels = corp_pair_labels(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 10, 20, 5, 15, 0]))
    logits = head(z[i], z[j])
    assert logits.shape == (30, 3) and len(head.mlp) == 5  # 3 linear layers, 2 ReLUs
    full = F.cross_entropy(logits, labels, reduction="sum")
    assert torch.allclose(corp_m_loss(logits, labels), full, rtol=1e-5)
    # no same-video pair: the order part is zero, and so is its gradient (masked, not selected)
    leaf = logits.detach().requires_grad_()
    order = corp_m_loss(leaf, torch.zeros_like(labels), ("order",))
    order.backward()
    assert order.item() == 0 and leaf.grad.abs().sum() == 0


def test_three_way_labels_for_every_pair_type():
    i, j, labels = corp_pair_labels(torch.tensor([0, 0, 1, 1]), torch.tensor([30, 10, 5, 50]))
    got = {(int(a), int(b)): int(c) for a, b, c in zip(i, j, labels, strict=True)}
    assert list(got) == [(a, b) for a in range(4) for b in range(4) if a != b]  # row-major, each pair once
    assert got[(1, 0)] == 1 and got[(0, 1)] == 2  # clip 1 (start 10) precedes clip 0 (start 30)
    assert got[(2, 3)] == 1 and got[(3, 2)] == 2
    cross = [(a, b) for a in (0, 1) for b in (2, 3)] + [(b, a) for a in (0, 1) for b in (2, 3)]
    assert all(got[p] == 0 for p in cross)


def test_nt_xent_against_a_hand_written_reference():
    z = unit(6, 8, seed=4)  # 3 videos: clips 0-2 are "a", 3-5 are "b"
    positive = torch.tensor([3, 4, 5, 0, 1, 2])
    expected = 0.0
    for n in range(6):
        den = sum(math.exp(float(z[n] @ z[m]) / 0.1) for m in range(6) if m != n)
        expected -= math.log(math.exp(float(z[n] @ z[positive[n]]) / 0.1) / den) / 6
    got = nt_xent(z, z, positive, torch.arange(6), 0.1)
    assert math.isclose(float(got), expected, rel_tol=1e-5)


@pytest.mark.parametrize("relation", ["decoupling", "mixed"])
def test_corp_f_loss_is_the_4b_minus_2_way_cross_entropy(relation):
    torch.manual_seed(0)
    m = CORPf(CORPConfig(relation=relation, **SMALL), Backbone("tiny3d")).eval()
    b = 3
    views = [torch.randn(b, 3, 4, 16, 16) for _ in range(2)]
    starts = torch.tensor([[0, 20], [30, 5], [10, 40]])
    loss, parts = m(views, {"starts": starts})
    with torch.no_grad():
        z = m.embed(torch.cat(views))
        # explicit (4B-2)-way classification per anchor: (other clip c, "anchor precedes c" or not)
        total = 0.0
        for n in range(2 * b):
            others = [c for c in range(2 * b) if c != n]
            sim = torch.stack([z[n] @ z[c] / 0.1 for c in others])
            log_same = sim - torch.logsumexp(sim, 0)  # eq. 5
            order = torch.stack([m.order_logits(z[n][None], z[c][None])[0].log_softmax(-1) for c in others])
            logp = (log_same[:, None] + order).flatten()  # (4B-2) classes
            assert torch.allclose(logp.exp().sum(), torch.tensor(1.0), atol=1e-5)
            pos = (n + b) % (2 * b)
            anchor_first = starts[n % b, n // b] <= starts[n % b, 1 - n // b]
            cls = others.index(pos) * 2 + (0 if anchor_first else 1)
            total -= float(logp[cls]) / b
    assert math.isclose(float(loss.detach()), total, rel_tol=1e-4)
    assert set(parts) == {"contrast", "order", "order_acc"}
    with torch.no_grad():  # the order head's accuracy: (earlier, later) must say 0, (later, earlier) 1
        right = 0
        for v in range(b):
            first, second = (v, v + b) if starts[v, 0] <= starts[v, 1] else (v + b, v)
            right += int(m.order_logits(z[first][None], z[second][None]).argmax()) == 0
            right += int(m.order_logits(z[second][None], z[first][None]).argmax()) == 1
    assert math.isclose(float(parts["order_acc"]), right / (2 * b))


def test_corp_m_and_simclr_train_steps():
    torch.manual_seed(0)
    m = CORPm(CORPConfig(num_clips=3, **SMALL), Backbone("tiny3d"))
    views = [torch.randn(4, 3, 4, 16, 16) for _ in range(3)]
    loss, parts = m(views, {"starts": torch.tensor([[0, 30, 60], [50, 10, 80], [5, 40, 70], [90, 0, 45]])})
    loss.backward()
    assert set(parts) == {"contrast", "order", "order_acc"} and torch.isfinite(loss)
    assert m.relation.G.weight.grad.abs().sum() > 0 and m.relation.P.weight.grad.abs().sum() > 0
    s = SimCLR(SimCLRConfig(**SMALL), Backbone("tiny3d"))
    loss, parts = s([torch.randn(4, 3, 4, 16, 16) for _ in range(2)], {"starts": torch.zeros(4, 2)})
    assert set(parts) == {"contrast"} and not hasattr(s, "order_head")
    with pytest.raises(ValueError, match="needs 2 or more"):
        m([torch.randn(1, 3, 4, 16, 16) for _ in range(3)], {"starts": torch.zeros(1, 3)})


def test_decoupling_attention_isolates_the_two_tasks_through_corp_m_and_corp_f():
    """Through the methods' forward: CORP_m's contrast part reaches the symmetric G only, its order
    part P and Q only; CORP_f's order part never reaches G."""
    torch.manual_seed(0)
    m = CORPm(CORPConfig(num_clips=2, **SMALL), Backbone("tiny3d"))
    views = [torch.randn(3, 3, 4, 16, 16) for _ in range(2)]
    _, parts = m(views, {"starts": torch.tensor([[0, 30], [50, 10], [5, 40]])})
    head = m.relation
    for name, reached, untouched in (("contrast", head.G, (head.P, head.Q)), ("order", head.P, (head.G,))):
        grads = torch.autograd.grad(parts[name], [reached.weight, *(u.weight for u in untouched)], allow_unused=True,
                                    retain_graph=True)
        assert grads[0] is not None and grads[0].abs().sum() > 0, name
        assert all(g is None or not g.abs().any() for g in grads[1:]), name
    f = CORPf(CORPConfig(**SMALL), Backbone("tiny3d"))
    starts = torch.tensor([[0, 9], [5, 1], [2, 3], [7, 0]])
    _, parts = f([torch.randn(4, 3, 4, 16, 16) for _ in range(2)], {"starts": starts})
    g_grad, p_grad = torch.autograd.grad(parts["order"], [f.order_head.G.weight, f.order_head.P.weight],
                                         allow_unused=True)
    assert (g_grad is None or not g_grad.abs().any()) and p_grad.abs().sum() > 0


def test_simclr_forward_against_a_hand_written_nt_xent():
    """SimCLR/CVRL (CORP eq. 6 without order): for each of the 2B clips, -log of its positive's
    exp(s/τ) over every other clip's, summed over anchors and divided by B."""
    torch.manual_seed(0)
    s = SimCLR(SimCLRConfig(**SMALL), Backbone("tiny3d")).eval()
    views = [torch.randn(3, 3, 4, 16, 16) for _ in range(2)]
    loss, parts = s(views, {"starts": torch.zeros(3, 2)})
    with torch.no_grad():
        z = s.embed(torch.cat(views))  # clips a (0..2), then clips b (3..5)
    total = 0.0
    for i in range(6):
        sims = [math.exp(float(z[i] @ z[k]) / s.cfg.tau) for k in range(6)]
        positive = (i + 3) % 6
        total -= math.log(sims[positive] / (sum(sims) - sims[i]))
    assert math.isclose(float(parts["contrast"].detach()), total / 3, rel_tol=1e-4)


def test_corp_m_pairs_every_two_videos_against_a_hand_written_loop():
    """(B^2 - B)/2 video pairs, each with its 2K(2K-1) ordered clip pairs and the 3-way label,
    cross-entropy summed over clip pairs and averaged over video pairs (CORP Sec. 3.2); an odd
    batch is fine."""
    torch.manual_seed(0)
    m = CORPm(CORPConfig(num_clips=2, relation="mixed", **SMALL), Backbone("tiny3d")).eval()
    b, k = 3, 2
    views = [torch.randn(b, 3, 4, 16, 16) for _ in range(k)]
    starts = torch.tensor([[0, 30], [50, 10], [5, 40]])
    loss, _ = m(views, {"starts": starts})
    with torch.no_grad():
        z = m.embed(torch.cat(views)).view(k, b, -1)  # z[clip, video]
    total, video_pairs = 0.0, 0
    for v in range(b):
        for w in range(v + 1, b):
            video_pairs += 1
            clips = [(v, c) for c in range(k)] + [(w, c) for c in range(k)]
            for a in clips:
                for c in clips:
                    if a == c:
                        continue
                    label = 0 if a[0] != c[0] else (1 if starts[a[0], a[1]] <= starts[c[0], c[1]] else 2)
                    with torch.no_grad():
                        logits = m.relation(z[a[1], a[0]][None], z[c[1], c[0]][None])[0]
                    total += float(-torch.log_softmax(logits, -1)[label])
    assert video_pairs == 3
    assert math.isclose(float(loss.detach()), total / video_pairs, rel_tol=1e-4)


def test_corp_configs_and_validation():
    cfg = load_config(None, ["corp_f.relation=mixed", "corp_f.mlp_layers=3", "corp_f.losses=[order]"], method="corp_f")
    assert cfg.arch() == "tiny3d" and cfg.corp_f.relation == "mixed"
    assert load_config(None, [], method="corp_m").corp_m.num_clips == 4
    with pytest.raises(Exception, match="relation must be one of"):
        load_config(None, ["corp_m.relation=cross"], method="corp_m")
    with pytest.raises(ValueError, match="3d backbone"):
        CORPf(CORPConfig(), Backbone("tiny2d"))


def test_relation_standardisation_keeps_symmetry_and_antisymmetry():
    from vidssl.models.relation import standardise

    head = DecouplingAttention(16, 8, 8, 16, 2)
    x, y = unit(5, 16, seed=11), unit(5, 16, seed=12)
    assert head.antisymmetric(x, y).abs().mean() < 0.05  # raw parts are tiny for unit-norm inputs ...
    a_xy, a_yx = standardise(head.antisymmetric(x, y)), standardise(head.antisymmetric(y, x))
    assert torch.allclose(a_xy, -a_yx, atol=1e-5) and torch.allclose(a_xy.std(-1), torch.ones(5), atol=0.1)
    assert torch.allclose(standardise(head.symmetric(x, y)), standardise(head.symmetric(y, x)))


def test_decoupled_order_part_is_zero_without_same_video_pairs():
    # masked rather than selected (no host-device synchronisation): pairs of different videos add
    # nothing and get no gradient
    same, order = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 0, 0])
    loss = corp_m_decoupled_loss(same, order, labels, ("order",))
    loss.backward()
    assert loss.item() == 0 and torch.all(order.grad == 0)
    labels = torch.tensor([1, 2, 0, 0, 1, 0])
    expected = F.binary_cross_entropy_with_logits(order[[0, 1, 4]], torch.tensor([1.0, 0.0, 1.0]), reduction="sum")
    assert torch.allclose(corp_m_decoupled_loss(same, order, labels, ("order",)), expected)
