"""Each loss against a hand-written reference (explicit sums of exponentials) on fixed tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidssl.losses import info_nce, seco_inter_loss, seco_intra_loss


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def ref_nce(q, pos, negs, tau):
    """-log(e^{q.k+/t} / (e^{q.k+/t} + sum_n e^{q.k_n/t})) for one query, in plain Python."""
    dot = lambda a, b: sum(float(x) * float(y) for x, y in zip(a, b, strict=True))  # noqa: E731
    num = math.exp(dot(q, pos) / tau)
    den = num + sum(math.exp(dot(q, n) / tau) for n in negs)
    return -math.log(num / den)


def test_info_nce_shared_negatives():
    q, k, queue = unit(4, 8, seed=0), unit(4, 8, seed=1), unit(6, 8, seed=2)
    expected = sum(ref_nce(q[i], k[i], queue, 0.1) for i in range(4)) / 4
    assert math.isclose(float(info_nce(q, k, queue, 0.1)), expected, rel_tol=1e-5)


def test_info_nce_per_query_negatives():
    q, k, negs = unit(3, 5, seed=3), unit(3, 5, seed=4), unit(3, 2, 5, seed=5)
    expected = sum(ref_nce(q[i], k[i], negs[i], 0.2) for i in range(3)) / 3
    assert math.isclose(float(info_nce(q, k, negs, 0.2)), expected, rel_tol=1e-5)


def test_info_nce_known_value():
    # q == k+ and one orthogonal negative: -log(e^{10} / (e^{10} + e^0))
    q = torch.tensor([[1.0, 0.0]])
    loss = info_nce(q, q, torch.tensor([[0.0, 1.0]]), tau=0.1)
    assert math.isclose(float(loss), math.log1p(math.exp(-10)), abs_tol=1e-6)


def test_info_nce_compiled_matches_the_reference():
    q, k, queue = unit(4, 8, seed=0), unit(4, 8, seed=1), unit(6, 8, seed=2)
    expected = sum(ref_nce(q[i], k[i], queue, 0.1) for i in range(4)) / 4
    torch._dynamo.reset()
    compiled = torch.compile(info_nce, backend="aot_eager", fullgraph=True)
    qc, qe = q.clone().requires_grad_(), q.clone().requires_grad_()
    loss = compiled(qc, k, queue, 0.1)
    torch._dynamo.reset()
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    info_nce(qe, k, queue, 0.1).backward()
    loss.backward()
    assert torch.allclose(qc.grad, qe.grad, atol=1e-6)


def test_seco_inter_is_mean_of_one_nce_per_positive():
    q, queue = unit(4, 8, seed=6), unit(10, 8, seed=7)
    keys = torch.stack([unit(4, 8, seed=s) for s in (8, 9, 10)])
    expected = sum(ref_nce(q[i], k[i], queue, 0.1) for k in keys for i in range(4)) / 12
    assert math.isclose(float(seco_inter_loss(q, keys, queue, 0.1)), expected, rel_tol=1e-5)


def test_seco_intra_two_way_softmaxes():
    q, same = unit(4, 8, seed=11), unit(4, 8, seed=12)
    others = torch.stack([unit(4, 8, seed=13), unit(4, 8, seed=14)])
    expected = sum(ref_nce(q[i], same[i], [o[i]], 0.1) for o in others for i in range(4)) / 8
    assert math.isclose(float(seco_intra_loss(q, same, others, 0.1)), expected, rel_tol=1e-5)


def test_seco_losses_match_infonce_per_term_in_value_and_gradient_at_sharp_temperatures():
    """Both SeCo losses share each query's negatives across its terms (one log-sum-exp); at a low
    temperature (scores up to 100) they must still equal the mean of one cross-entropy InfoNCE per
    term, gradients included."""
    q, queue, same = unit(6, 8, seed=15), unit(12, 8, seed=16), unit(6, 8, seed=17)
    keys, others = unit(3, 6, 8, seed=18), unit(2, 6, 8, seed=19)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    for tau in (0.01, 0.07):
        inter = seco_inter_loss(q1, keys, queue, tau)
        reference = sum(info_nce(q2, k, queue, tau) for k in keys) / 3
        intra = seco_intra_loss(q1, same, others, tau)
        reference_intra = sum(info_nce(q2, same, o[:, None], tau) for o in others) / 2
        assert torch.allclose(inter, reference, rtol=1e-5) and torch.allclose(intra, reference_intra, rtol=1e-5)
        (inter + intra).backward()
        (reference + reference_intra).backward()
        assert torch.allclose(q1.grad, q2.grad, rtol=1e-4, atol=1e-6)
        q1.grad = q2.grad = None


def test_losses_are_float32_under_bf16_inputs():
    q, k, queue = (unit(4, 8, seed=s).bfloat16() for s in (0, 1, 2))
    assert info_nce(q, k, queue).dtype == torch.float32
    assert seco_inter_loss(q, k[None], queue).dtype == seco_intra_loss(q, k, queue[None]).dtype == torch.float32


def test_seco_forward_wiring_against_its_heads_by_hand():
    """Which head feeds which loss: the order classifier reads [q_order(anchor), k_order(frame 2),
    k_order(frame 3)] and label 0 means the anchor came first (the sampler draws it from the first
    half); intra contrasts the anchor's second view against the two other frames; inter scores the
    three keys against the queue. Checked by recomputing each part from the heads (eval mode: no
    BatchNorm statistics, so the key shuffle does not matter)."""
    import math

    import numpy as np

    from vidssl.data.samplers import SeCoTripletSampler
    from vidssl.losses.contrastive import seco_inter_loss, seco_intra_loss
    from vidssl.methods.seco import SeCo, SeCoConfig
    from vidssl.models.backbones import Backbone

    for seed in range(6):  # label 0: anchor in the first half, before both others; label 1: after
        plan = SeCoTripletSampler().plan(40, np.random.default_rng(seed))
        (anchor,), (f2,), (f3,) = plan.views
        assert (anchor < f2 < f3) if plan.info["order"] == 0 else (f2 < f3 < anchor)
    torch.manual_seed(0)
    m = SeCo(SeCoConfig(queue_size=32, head_hidden=16, head_dim=8), Backbone("tiny2d")).eval()
    views = [torch.randn(4, 3, 24, 24) for _ in range(4)]
    labels = torch.tensor([0, 1, 1, 0])
    queue = m.queue.snapshot().clone()
    _, parts = m(views, {"order": labels})
    with torch.no_grad():
        q = m.encoders.encoder_q.project(m.encoders.encoder_q.backbone(views[0]))
        k = [m.encoders.encoder_k.project(m.encoders.encoder_k.backbone(v)) for v in views[1:]]
        logits = m.order_classifier(torch.cat([q["order"], k[1]["order"], k[2]["order"]], dim=1))
        expected = {
            "order": float(torch.nn.functional.cross_entropy(logits, labels)),
            "intra": float(seco_intra_loss(q["intra"], k[0]["intra"], torch.stack([k[1]["intra"], k[2]["intra"]]),
                                           m.cfg.tau)),
            "inter": float(seco_inter_loss(q["inter"], torch.stack([kk["inter"] for kk in k]), queue, m.cfg.tau)),
        }
    for name, value in expected.items():
        assert math.isclose(float(parts[name].detach()), value, rel_tol=1e-4), name
