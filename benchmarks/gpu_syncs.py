"""Host-device synchronisations in one training step of each method (CUDA only).

    python benchmarks/gpu_syncs.py [--methods seco,mlfo] [key=value ...]

Runs each method's laptop config on the GPU for two warm-up steps, then one step (forward, backward,
optimizer step) under ``torch.cuda.set_sync_debug_mode("warn")`` and prints every line of vidssl
that made the host wait for the device, with how many times it did.
"""

from __future__ import annotations

import argparse
import collections
import traceback
import warnings

import torch
from torch.utils.data import DataLoader

from vidssl.data.dataset import collate_samples
from vidssl.engine.config import laptop_config, load_config
from vidssl.engine.optim import build_optimizer
from vidssl.engine.train import build_dataset, build_method

METHODS = "seco,moco,vclr,corp_f,corp_m,simclr,mlfo"


def syncs_of_one_step(method_name: str, overrides: list[str]) -> collections.Counter:
    cfg = load_config(laptop_config(method_name), overrides, method_name)
    device = torch.device("cuda")
    torch.manual_seed(0)
    dataset = build_dataset(cfg)
    batch = next(iter(DataLoader(dataset, batch_size=cfg.train.batch_size, collate_fn=collate_samples)))
    views = [v.to(device) for v in batch["views"]]
    info = {k: v.to(device) for k, v in batch["info"].items()}
    model = build_method(cfg, False)[0].to(device)
    if hasattr(model, "set_epoch"):
        model.set_epoch(cfg.train.epochs - 1, cfg.train.epochs)  # every loss term active
    optimizer = build_optimizer(cfg.optim.name, model, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay)

    def step(seed: int) -> None:
        loss, _ = model(views, info, torch.Generator().manual_seed(seed))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for seed in range(2):
        step(seed)
    torch.cuda.synchronize()
    where: collections.Counter = collections.Counter()
    original = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing" not in str(message):
            return original(message, category, filename, lineno, file, line)
        frames = [f for f in traceback.extract_stack()[:-1] if "/vidssl/" in f.filename]
        where[f"{frames[-1].filename.split('/vidssl/')[-1]}:{frames[-1].lineno}" if frames else "(outside vidssl)"] += 1

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():  # restores showwarning on exit
            warnings.simplefilter("always")
            warnings.showwarning = record
            step(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for name in args.methods.split(","):
        where = syncs_of_one_step(name, args.overrides)
        print(f"{name}: {sum(where.values())} synchronisations in one step")
        for line, count in where.most_common():
            print(f"    {count:3d}  {line}")


if __name__ == "__main__":
    main()
