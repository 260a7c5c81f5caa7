"""Every classification-shaped loss compiled by inductor, against itself run eagerly.

    python benchmarks/compile_losses.py [--device cuda] [--scales laptop,scale]

Each loss of ``vidssl.losses`` that ends in a softmax over scores (``F.cross_entropy``, or SeCo's
losses' log-sum-exp form) is compiled as one graph (``fullgraph=True``, static shapes) at the laptop
configs' sizes and at the larger batches of ``benchmarks/gpu_speed.sh scale``. The case that once
failed: ``F.cross_entropy`` over 384 rows against 4,096 queued keys (SeCo's three positives at
batch 128, torch 2.11 on an H100: inductor fused the mean with its count of valid labels into a
kernel Triton failed to compile) is ``info_nce (384 rows)``. Value and input gradients are compared
with the eager loss; a failed compilation is printed with the first line of its error. Exit status
1 if any case fails.
Inductor needs a C++ compiler on CPU; on CUDA it generates Triton kernels.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vidssl.losses import info_nce, seco_inter_loss, seco_intra_loss
from vidssl.losses.corp import corp_f_order_loss, corp_m_loss, nt_xent
from vidssl.losses.mlfo import timestamp_retrieval_loss

# per scale: batch, queue length, embedding size (frame methods at batch 128 with 4,096 queued keys)
SCALES = {"laptop": (16, 256, 128), "scale": (128, 4096, 128)}


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def cases(batch: int, queue: int, dim: int) -> dict[str, tuple[Callable[..., torch.Tensor], list[torch.Tensor]]]:
    """name -> (loss of float tensors only, its inputs); integer arguments are closed over."""
    b, g = batch, torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    order_labels = torch.randint(0, 4, (b,), generator=g)
    self_index = torch.arange(2 * b)
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    pair_labels = torch.randint(0, 3, (b * 56,), generator=g)  # CORP_m: per sample 2 videos x 4 clips, 56 pairs
    return {
        "info_nce (queue)": (lambda q, k, n: info_nce(q, k, n), [unit(b, dim), unit(b, dim), unit(queue, dim)]),
        f"info_nce ({3 * b} rows)": (lambda q, k, n: info_nce(q, k, n),
                                     [unit(3 * b, dim), unit(3 * b, dim), unit(queue, dim)]),
        "seco_inter_loss (3 positives)": (lambda q, k1, k2, k3, n: seco_inter_loss(q, torch.stack([k1, k2, k3]), n),
                                          [unit(b, dim), *(unit(b, dim) for _ in range(3)), unit(queue, dim)]),
        "seco_intra_loss (2 other frames)": (lambda q, s, o1, o2: seco_intra_loss(q, s, torch.stack([o1, o2])),
                                             [unit(b, dim) for _ in range(4)]),
        "cross_entropy (4-way order)": (lambda x: F.cross_entropy(x, order_labels), [torch.randn(b, 4)]),
        "nt_xent (2B anchors)": (lambda a, c: nt_xent(a, c, positive, self_index),
                                 [unit(2 * b, dim), unit(2 * b, dim)]),
        "corp_f_order_loss": (corp_f_order_loss, [torch.randn(b, 2), torch.randn(b, 2)]),
        "corp_m_loss (56 pairs a sample)": (lambda x: corp_m_loss(x, pair_labels), [torch.randn(len(pair_labels), 3)]),
        "timestamp_retrieval_loss": (lambda s, long: timestamp_retrieval_loss(s, long, 2),
                                     [unit(b, 4, dim), unit(b, 8, dim)]),
    }


def check(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], device: torch.device) -> str:
    """Compiled against eager: value and every input's gradient; returns a one-line verdict."""
    results = []
    for compiled in (False, True):
        xs = [x.to(device).requires_grad_(True) for x in inputs]
        f = torch.compile(fn, fullgraph=True, dynamic=False) if compiled else fn
        loss = f(*xs)
        loss.backward()
        results.append((loss.detach(), [x.grad for x in xs]))
    (eager, eager_grads), (comp, comp_grads) = results
    diff = max([(eager - comp).abs().item()] + [(a - c).abs().max().item() for a, c in zip(eager_grads, comp_grads,
                                                                                             strict=True)])
    ok = torch.allclose(eager, comp, rtol=1e-4, atol=1e-5) and all(
        torch.allclose(a, c, rtol=1e-4, atol=1e-6) for a, c in zip(eager_grads, comp_grads, strict=True))
    return f"{'ok' if ok else 'MISMATCH'} (largest difference {diff:.1e})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scales", default="laptop,scale")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")
    failed = 0
    for scale in args.scales.split(","):
        for case, (fn, inputs) in cases(*SCALES[scale]).items():
            torch._dynamo.reset()
            start = time.perf_counter()
            try:
                verdict = check(fn, inputs, device)
            except Exception as exc:  # a compiler failure is the finding: report it and go on
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                verdict = f"FAILED: {type(exc).__name__}: {first}"
            failed += not verdict.startswith("ok")
            shapes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
            print(f"{scale:6s} {case:34s} [{shapes}] {verdict} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
