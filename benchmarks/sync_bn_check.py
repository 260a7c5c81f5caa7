"""GPU check of `model.sync_bn` (PyTorch's SyncBatchNorm runs only on CUDA; CI cannot run this).

    torchrun --nproc_per_node NGPUS benchmarks/sync_bn_check.py

Each rank converts a CORP_f model as `vidssl pretrain` does (`sync_batch_norm`), feeds the
backbone's first BatchNorm different data per rank in train mode, and checks that its running
mean after one step is the global batch's (momentum 0.1 from zero) on every rank. Prints one line
per rank and exits 1 on a mismatch. With one GPU it checks only that the converted model runs.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from vidssl.engine.config import load_config
from vidssl.engine.distributed import setup, teardown
from vidssl.engine.train import build_method, sync_batch_norm


def main() -> int:
    ctx = setup("cuda", 120)
    method, _ = build_method(load_config(None, [], "corp_f"), ctx.distributed)
    method = sync_batch_norm(method, ctx).to(ctx.device)
    bn = next(m for m in method.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    bn.train()
    bn.reset_running_stats()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, bn.num_features, 2, 5, 5, generator=g) + r for r in range(ctx.world_size)]
    out = bn(batches[ctx.rank].to(ctx.device))
    torch.cuda.synchronize()
    expected = 0.1 * torch.cat(batches).mean(dim=(0, 2, 3, 4))
    ok = isinstance(bn, nn.SyncBatchNorm) == ctx.distributed and torch.allclose(
        bn.running_mean.cpu(), expected, atol=1e-5) and torch.isfinite(out).all().item()
    print(f"rank {ctx.rank}/{ctx.world_size}: {type(bn).__name__}, running mean is the global batch's: {ok}")
    if ctx.distributed:
        dist.barrier()
    teardown(ctx)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
