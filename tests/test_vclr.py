from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from vidssl.data.samplers import VCLRSampler
from vidssl.engine.config import load_config
from vidssl.methods.vclr import VCLR, VCLRConfig, draw_tuple_shuffles, shuffle_tuples, shuffling_permutations
from vidssl.models.backbones import Backbone


def test_shuffling_permutations_exclude_identity_and_reversal():
    perms = shuffling_permutations(3).tolist()
    assert sorted(perms) == [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1]]
    assert len(shuffling_permutations(4)) == 22 and len(shuffling_permutations(2)) == 0


def test_four_way_labels_are_correct_and_balanced():
    g = torch.Generator().manual_seed(0)
    n, b = 3, 4000
    frames = torch.arange(n, dtype=torch.float).expand(b, n)[..., None]  # each feature = its position
    orders, (q_flag, k_flag) = draw_tuple_shuffles(2, b, n, g, frames.device)
    q, k = shuffle_tuples(frames, orders[0]), shuffle_tuples(frames, orders[1])
    valid = {tuple(p) for p in shuffling_permutations(n).tolist()}
    for x, flag in ((q, q_flag), (k, k_flag)):
        order = [tuple(int(v) for v in row) for row in x[..., 0]]
        for o, f in zip(order, flag.tolist(), strict=True):
            assert (o in valid) if f else (o == (0, 1, 2))
    labels = Counter((q_flag + 2 * k_flag).tolist())
    assert set(labels) == {0, 1, 2, 3} and all(abs(c / b - 0.25) < 0.03 for c in labels.values())
    used = Counter(tuple(int(v) for v in row) for row, f in zip(q[..., 0], q_flag, strict=True) if f)
    assert set(used) == valid and all(abs(c / sum(used.values()) - 0.25) < 0.04 for c in used.values())


def test_sampler_views_and_anchor():
    s = VCLRSampler(3)
    for seed in range(50):
        plan = s.plan(90, np.random.default_rng(seed))
        assert len(plan.views) == 7
        q, k, anchor = plan.views[:3], plan.views[3:6], plan.views[6]
        assert anchor == (q[2] if plan.info["anchor_last"] else q[0])
        assert all(a != b for a, b in zip(q, k, strict=True))


def ref_nce(q, pos, negs, tau):
    dot = lambda a, b: float((a * b).sum().detach())  # noqa: E731
    num = math.exp(dot(q, pos) / tau)
    return -math.log(num / (num + sum(math.exp(dot(q, n_) / tau) for n_ in negs)))


def test_video_loss_against_a_hand_written_reference():
    torch.manual_seed(0)
    cfg = VCLRConfig(losses=["video"], num_segments=3, video_queue_size=8, head_hidden=16, head_dim=8,
                     shuffle_bn_splits=1, momentum=0.5)
    m = VCLR(cfg, Backbone("tiny2d"))
    b = 4
    views = [torch.randn(b, 3, 16, 16) for _ in range(7)]
    queue = m.video_queue.keys.clone()
    loss, parts = m(views, {"anchor_last": torch.zeros(b, dtype=torch.long)}, torch.Generator().manual_seed(0))
    with torch.no_grad():
        hq = m.backbone(torch.cat(views[:3])).view(3, b, -1)  # segment by segment
        vq = torch.nn.functional.normalize(m.encoders.encoder_q.heads["video"](hq.mean(0)), dim=1)
        # train-mode BN over the same batch
        hk = m.encoders.encoder_k.backbone(torch.cat(views[3:]))[: b * 3].view(3, b, -1)
        vk = torch.nn.functional.normalize(m.encoders.encoder_k.heads["video"](hk.mean(0)), dim=1)
    expected = sum(ref_nce(vq[i], vk[i], queue, 0.1) for i in range(b)) / b
    assert math.isclose(float(parts["video"].detach()), expected, rel_tol=1e-4)
    assert torch.allclose(m.video_queue.keys[:b], vk, atol=1e-6)  # the key-tuple embeddings are enqueued



def test_inter_and_intra_losses_against_a_hand_written_reference():
    """The frame losses pick the anchor's segment (first or last, per video) on the query side and
    the other segments' key frames, in temporal order, as positives (inter) or negatives (intra)."""
    torch.manual_seed(0)
    n, b, tau = 4, 4, 0.1
    cfg = VCLRConfig(losses=["inter", "intra"], num_segments=n, queue_size=64, head_hidden=16, head_dim=8,
                     shuffle_bn_splits=1, tau=tau)
    m = VCLR(cfg, Backbone("tiny2d"))
    views = [torch.randn(b, 3, 16, 16) for _ in range(2 * n + 1)]
    last = torch.tensor([0, 1, 1, 0])
    queue = m.queue.keys.clone()
    _, parts = m(views, {"anchor_last": last}, torch.Generator().manual_seed(0))
    with torch.no_grad():
        def head(encoder, h, name):
            return torch.nn.functional.normalize(encoder.heads[name](h), dim=-1)

        hq = m.backbone(torch.cat(views[:n])).view(n, b, -1).transpose(0, 1)  # (B, N, D)
        hk = m.encoders.encoder_k.backbone(torch.cat(views[n:]))
        k_tuple, k_anchor = hk[: b * n].view(n, b, -1).transpose(0, 1), hk[b * n:]
    inter, intra = [], []
    for i in range(b):
        anchor = n - 1 if last[i] else 0
        others = [j for j in range(n) if j != anchor]
        q = head(m.encoders.encoder_q, hq[i, anchor][None], "inter")[0]
        keys = head(m.encoders.encoder_k, torch.cat([k_anchor[i][None], k_tuple[i, others]]), "inter")
        inter += [ref_nce(q, key, queue, tau) for key in keys]
        q = head(m.encoders.encoder_q, hq[i, anchor][None], "intra")[0]
        same = head(m.encoders.encoder_k, k_anchor[i][None], "intra")
        other = head(m.encoders.encoder_k, k_tuple[i, others], "intra")
        intra += [ref_nce(q, same[0], o[None], tau) for o in other]
    assert math.isclose(float(parts["inter"].detach()), sum(inter) / len(inter), rel_tol=1e-4)
    assert math.isclose(float(parts["intra"].detach()), sum(intra) / len(intra), rel_tol=1e-4)
    # the queue holds the inter keys: the anchors' second views, then each other segment in order
    expected_keys = [head(m.encoders.encoder_k, k_anchor, "inter")]
    for j in range(n - 1):
        rows = [[j, j + 1][int(not last[i])] for i in range(b)]  # the j-th other segment of each video
        expected_keys.append(head(m.encoders.encoder_k, k_tuple[torch.arange(b), rows], "inter"))
    assert torch.allclose(m.queue.keys[: b * n], torch.cat(expected_keys), atol=1e-6)

def test_order_loss_against_a_hand_written_reference():
    """L_order (VCLR Sec. 3.3): the query tuple's and the key tuple's order-head embeddings, each
    shuffled by its own draw (query first, after shuffle-BN's permutation), concatenated and
    classified 4 ways, the label being ``query shuffled + 2 x key shuffled``."""
    torch.manual_seed(0)
    n, b = 3, 6
    cfg = VCLRConfig(losses=["order"], num_segments=n, head_hidden=16, head_dim=8, shuffle_bn_splits=1)
    m = VCLR(cfg, Backbone("tiny2d"))
    views = [torch.randn(b, 3, 16, 16) for _ in range(2 * n + 1)]
    _, parts = m(views, {"anchor_last": torch.zeros(b, dtype=torch.long)}, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    torch.randperm(b * n + b, generator=g)  # shuffle-BN's draw comes first
    orders, flags = draw_tuple_shuffles(2, b, n, g, torch.device("cpu"))
    with torch.no_grad():
        def order_head(encoder, h):
            return torch.nn.functional.normalize(encoder.heads["order"](h), dim=-1)

        zq = order_head(m.encoders.encoder_q, m.backbone(torch.cat(views[:n]))).view(n, b, -1).transpose(0, 1)
        keys = m.encoders.encoder_k.backbone(torch.cat(views[n:]))
        zk = order_head(m.encoders.encoder_k, keys[: b * n]).view(n, b, -1).transpose(0, 1)
        rows = torch.arange(b)[:, None]
        features = torch.cat([zq[rows, orders[0]].flatten(1), zk[rows, orders[1]].flatten(1)], 1)
        expected = torch.nn.functional.cross_entropy(m.order_classifier(features), flags[0] + 2 * flags[1])
    assert 0 < int(flags.sum()) < 2 * b  # some tuples shuffled, some not
    assert torch.allclose(parts["order"].detach(), expected, atol=1e-5)


@pytest.mark.parametrize(("arch", "clip_len", "shape"), [("tiny2d", 1, (3, 16, 16)), ("tiny3d", 4, (3, 4, 16, 16))])
def test_2d_and_3d_variants(arch, clip_len, shape):
    cfg = VCLRConfig(clip_len=clip_len, queue_size=32, video_queue_size=16, head_hidden=16, head_dim=8)
    m = VCLR(cfg, Backbone(arch))
    views = [torch.randn(4, *shape) for _ in range(7)]
    loss, parts = m(views, {"anchor_last": torch.tensor([0, 1, 0, 1])}, torch.Generator().manual_seed(0))
    assert set(parts) == {"video", "inter", "intra", "order", "order_acc"} and torch.isfinite(loss)
    assert 0 <= float(parts["order_acc"]) <= 1
    loss.backward()
    assert m.order_classifier.weight.grad is not None and m.backbone.net.conv1.weight.grad.abs().sum() > 0
    assert int(m.queue.ptr) == 4 * 3 and int(m.video_queue.ptr) == 4


def test_ablation_settings_are_validated():
    load_config(None, ["vclr.losses=[video]", "vclr.num_segments=1"], method="vclr")
    load_config(None, ["vclr.num_segments=5"], method="vclr")
    with pytest.raises(Exception, match="order' needs num_segments >= 3"):
        load_config(None, ["vclr.num_segments=2"], method="vclr")
    with pytest.raises(ValueError, match="needs a 3d backbone"):
        VCLR(VCLRConfig(clip_len=4), Backbone("tiny2d"))


def test_pretrain_vclr_on_a_ucf101_layout(ucf_dir, tmp_path):
    from vidssl.cli import main
    from vidssl.engine.checkpoint import load_checkpoint

    args = ["pretrain", "--method", "vclr", "--data", str(ucf_dir), "--layout", "ucf101", "--out", str(tmp_path),
            "data.num_workers=0", "train.batch_size=4", "train.max_steps=2", "augment.size=24",
            "vclr.queue_size=16", "vclr.video_queue_size=8", "vclr.head_hidden=32"]
    assert main(args) == 0
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["method"] == "vclr" and state["step"] == 2 and "video_queue.keys" in state["model"]


@pytest.mark.slow
def test_vclr_trains_under_torch_compile():
    """The queues are updated in place before backward: a compiled graph must not save their
    buffers for the backward pass (inductor did, through `keys.clone().detach()`, and the backward
    failed on a modified buffer); `KeyQueue.snapshot` copies them outside the graph."""
    torch.manual_seed(0)
    model = VCLR(VCLRConfig(queue_size=16, video_queue_size=8, head_hidden=16, head_dim=8), Backbone("tiny2d")).train()
    views = [torch.randn(4, 3, 16, 16) for _ in range(7)]
    info = {"anchor_last": torch.tensor([0, 1, 0, 1])}
    compiled = torch.compile(model)
    for step in range(2):  # the second step's backward reads the queues the first step changed
        before = model.queue.keys.clone()
        loss, _ = compiled(views, info, torch.Generator().manual_seed(step))
        loss.backward()
        assert torch.isfinite(loss) and not torch.equal(model.queue.keys, before)
