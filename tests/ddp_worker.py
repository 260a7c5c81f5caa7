"""Run by tests/test_ddp.py under ``torchrun --nproc_per_node 2``: one SeCo training step with
different data on each rank, then a dump of what each rank holds."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vidssl.engine.distributed import setup, teardown
from vidssl.methods.corp import CORPConfig, CORPf
from vidssl.methods.mlfo import MLFO, MLFOConfig
from vidssl.methods.seco import SeCo, SeCoConfig
from vidssl.methods.vclr import VCLR, VCLRConfig
from vidssl.models.backbones import Backbone
from vidssl.modules.distributed import all_gather_nograd, all_gather_with_grad
from vidssl.modules.queue import KeyQueue
from vidssl.modules.shuffle_bn import shuffle_bn_forward, shuffle_permutation


def record_enqueued(queue: KeyQueue) -> dict[str, torch.Tensor]:
    """Wrap ``queue.enqueue`` to keep the local keys it is handed (before the gather)."""
    recorded: dict[str, torch.Tensor] = {}
    enqueue = queue.enqueue

    def spy(keys: torch.Tensor, gather: bool = True) -> None:
        recorded["local"] = keys.detach().clone()
        enqueue(keys, gather)

    queue.enqueue = spy
    return recorded


def main(out: str) -> None:
    ctx = setup("cpu")
    rank = ctx.rank
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    method = SeCo(SeCoConfig(queue_size=32, head_hidden=16, head_dim=8, momentum=0.9), Backbone("tiny2d"),
                  distributed=True)
    model = DistributedDataParallel(method, broadcast_buffers=False)
    opt = torch.optim.SGD(method.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(4)]
    info = {"order": torch.randint(0, 2, (4,), generator=g)}

    recorded = record_enqueued(method.queue)
    loss, _ = model(views, info, torch.Generator().manual_seed(7))
    loss.backward()
    opt.step()
    keys_q = method.queue.keys.clone()
    all_keys = all_gather_nograd(recorded["local"])  # rank 0's 12 keys, then rank 1's

    local = torch.full((3, 2), float(rank))
    gathered = all_gather_nograd(local)

    # Gather with gradient: d/dx of sum over ranks of (rank + 1) * sum(gathered) = sum_r (r + 1).
    x = torch.ones(2, 3, requires_grad=True)
    (all_gather_with_grad(x).sum() * (rank + 1)).backward()

    # Shuffle-BN across ranks: in eval mode it must equal the plain computation.
    enc = method.encoders.encoder_k.backbone
    for buf in enc.buffers():  # BN running stats are per rank (broadcast_buffers=False): align them
        dist.broadcast(buf, src=0)
    enc.eval()
    xb = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(50 + rank))
    sbn_eval = shuffle_bn_forward(enc, xb, shuffle_permutation(4, True, torch.Generator().manual_seed(3), xb.device),
                                  distributed=True)
    plain = enc(xb)
    # Train mode: rows must equal encoding this rank's slice of the shuffled global batch.
    enc.train()
    perm_gen = torch.Generator().manual_seed(4 if rank == 0 else 99)  # rank 0's draw is the one used
    x_all = all_gather_nograd(xb)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(4))
    sbn_train = shuffle_bn_forward(enc, xb, shuffle_permutation(4, True, perm_gen, xb.device), distributed=True)
    with torch.no_grad():
        outs = torch.cat([enc(x_all[perm[r * 4:(r + 1) * 4]]) for r in range(2)])
    expected = torch.empty_like(outs)
    expected[perm] = outs

    # VCLR's second queue: identical on both ranks and holding both ranks' key-tuple embeddings.
    torch.manual_seed(0)
    vclr = VCLR(VCLRConfig(queue_size=32, video_queue_size=16, head_hidden=16, head_dim=8), Backbone("tiny2d"),
                distributed=True)
    vclr_ddp = DistributedDataParallel(vclr, broadcast_buffers=False)
    video_keys = record_enqueued(vclr.video_queue)
    g2 = torch.Generator().manual_seed(200 + rank)
    vviews = [torch.randn(4, 3, 16, 16, generator=g2) for _ in range(7)]
    vloss, _ = vclr_ddp(vviews, {"anchor_last": torch.tensor([0, 1, 1, 0])}, torch.Generator().manual_seed(9))
    vloss.backward()

    # CORP_f: NT-Xent negatives gathered across ranks. In eval mode the features do not depend on
    # the batch, so the mean of the ranks' losses must equal one process's loss on the union batch.
    torch.manual_seed(0)
    corp = CORPf(CORPConfig(proj_hidden=32, proj_dim=16, heads=8, mlp_hidden=16, clip_len=4, losses=["contrast"]),
                 Backbone("tiny3d"), distributed=True).eval()
    g3 = torch.Generator().manual_seed(300 + rank)
    cviews = [torch.randn(4, 3, 4, 16, 16, generator=g3) for _ in range(2)]
    local_loss, _ = corp(cviews, {"starts": torch.zeros(4, 2)})
    mean_loss = all_gather_nograd(local_loss.detach()[None]).mean()
    corp.distributed = False
    nogather_loss, _ = corp(cviews, {"starts": torch.zeros(4, 2)})
    union = [all_gather_nograd(v) for v in cviews]
    union_loss, _ = corp(union, {"starts": torch.zeros(8, 2)})

    # MLFO: instance negatives, Sinkhorn codes, graph targets and the score queue all span the
    # gathered batch, so (eval mode) the mean of the ranks' losses equals the union batch's loss.
    torch.manual_seed(0)
    mcfg = MLFOConfig(clip_len=4, proj_hidden=32, proj_dim=16, prototypes=6, score_queue=32, graph_start=0.0,
                      freeze_prototypes_epochs=0, me_reduction=4, retrieval_levels=["low"])
    mlfo = MLFO(mcfg, Backbone("tiny3d"), distributed=True).eval()
    mlfo.set_epoch(2, 3)  # the score queue joins the Sinkhorn problem, still empty: all its slots masked out
    g4 = torch.Generator().manual_seed(400 + rank)
    mviews = [torch.randn(4, 3, 4, 16, 16, generator=g4) for _ in range(3)]
    m_local, m_parts = mlfo(mviews, {}, torch.Generator().manual_seed(5))
    m_mean = all_gather_nograd(m_local.detach()[None]).mean()
    mlfo_queue = torch.cat([q.keys[:8].clone() for q in mlfo.score_queues])
    mlfo.distributed = False
    m_nogather, _ = mlfo(mviews, {}, torch.Generator().manual_seed(5))
    for queue in mlfo.score_queues:
        queue.filled.zero_()
        queue.ptr.zero_()
    m_union, _ = mlfo([all_gather_nograd(v) for v in mviews], {}, torch.Generator().manual_seed(5))

    result = {
        "mlfo_mean_loss": float(m_mean),
        "mlfo_union_loss": float(m_union.detach()),
        "mlfo_local_loss": float(m_local.detach()),
        "mlfo_nogather_loss": float(m_nogather.detach()),
        "mlfo_parts": sorted(m_parts),
        "mlfo_queue": mlfo_queue.tolist(),
        "corp_mean_loss": float(mean_loss),
        "corp_union_loss": float(union_loss.detach()),
        "corp_local_loss": float(local_loss.detach()),
        "corp_nogather_loss": float(nogather_loss.detach()),
        "video_queue": vclr.video_queue.keys.tolist(),
        "video_expected_head": all_gather_nograd(video_keys["local"]).tolist(),
        "frame_queue": vclr.queue.keys.tolist(),
        "vclr_grad_sum": float(vclr.backbone.net.conv1.weight.grad.double().sum()),
        "rank": rank,
        "queue": keys_q.tolist(),
        "expected_head": all_keys.tolist(),
        "ptr": int(method.queue.ptr),
        "params": [p.detach().flatten()[:50].tolist() for p in method.encoders.encoder_q.parameters()][:6],
        "param_sum": float(sum(p.detach().double().sum() for p in method.encoders.encoder_q.parameters())),
        "gathered": gathered.tolist(),
        "grad_x": x.grad.tolist(),
        "sbn_eval_err": float((sbn_eval - plain).abs().max()),
        "sbn_train_err": float((sbn_train - expected[rank * 4:(rank + 1) * 4]).abs().max()),
    }
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(result, fh)
    dist.barrier()
    teardown(ctx)


if __name__ == "__main__":
    main(sys.argv[1])
