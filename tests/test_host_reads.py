"""A training step reads nothing back from the device.

On a GPU every read of a device tensor on the host (``.item()``, ``bool(t)``, ``int(t)``,
``.tolist()``, ``nonzero``, boolean-mask indexing, ``torch.unique``, ``torch.equal``) makes the host
wait for the device. Tensors on the ``meta`` device have shapes and no data, so each of those reads
raises there: a step that runs on ``meta`` has none. This checks on a CPU what
``benchmarks/gpu_syncs.py`` measures on a GPU, for every method's step (forward, backward,
optimizer step, with its EMA and queue updates), twice, so that the queues hold keys.
Host-side draws from a ``torch.Generator`` (permutations, shuffles, time orders) stay on the CPU
and are copied to the device without a read back.

And a compiled step is one graph (MLFO's: two). With CUDA graphs
(``train.compile_mode=reduce-overhead``) each compiled graph is replayed by one launch, and what
runs between graphs runs eagerly, kernel by kernel: on an H100 the laptop configs' overhead
followed their steps' graph breaks (docs/benchmarks.md, "GPU"). So a step does its host work
(draws from its generator, the queues' snapshots) at its top, where it splits off no graph, and
builds index tensors with fixed shapes on the device.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vidssl.data.dataset import collate_samples
from vidssl.engine.config import Config, laptop_config, load_config
from vidssl.engine.optim import build_optimizer
from vidssl.engine.train import build_dataset, build_method

SMALL = ["train.batch_size=4", "data.synthetic_videos=40"]


def laptop_step(method: str, overrides: list[str]) -> tuple[Config, torch.nn.Module, dict]:
    """The method's laptop config (batch 4), its model in train mode with every loss term on (MLFO's
    score queue in use) and a batch of 4 built-in videos."""
    cfg = load_config(laptop_config(method), SMALL + overrides, method)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(build_dataset(cfg), batch_size=4, sampler=list(range(4)),
                                 collate_fn=collate_samples)))
    model = build_method(cfg, False)[0].train()
    if hasattr(model, "set_epoch"):
        model.set_epoch(cfg.train.epochs - 1, cfg.train.epochs)
    return cfg, model, batch


def steps_on_meta(method: str, overrides: list[str], optimizer: str | None = None) -> torch.Tensor:
    cfg, model, batch = laptop_step(method, overrides)
    model.to("meta")
    opt = build_optimizer(optimizer or cfg.optim.name, model, cfg.optim.lr, cfg.optim.momentum,
                          cfg.optim.weight_decay)
    views = [v.to("meta") for v in batch["views"]]
    info = {k: v.to("meta") for k, v in batch["info"].items()}
    for seed in range(2):
        loss, parts = model(views, info, torch.Generator().manual_seed(seed))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss


@pytest.mark.parametrize(("method", "overrides"), [
    ("seco", []),
    ("moco", []),
    ("vclr", []),
    ("vclr", ["vclr.num_segments=4"]),
    ("corp_f", []),
    ("corp_f", ["corp_f.relation=mixed"]),
    ("corp_m", []),
    ("corp_m", ["corp_m.relation=mixed"]),
    ("simclr", []),
    ("mlfo", []),
    ("mlfo", ["mlfo.temporal=input"]),
])
def test_training_step_reads_nothing_back_from_the_device(method, overrides):
    loss = steps_on_meta(method, overrides)
    assert loss.device.type == "meta" and loss.shape == ()


@pytest.mark.parametrize("optimizer", ["lars", "adam"])
def test_optimizers_read_nothing_back_from_the_device(optimizer):
    steps_on_meta("seco", [], optimizer)


def test_a_host_read_fails_on_meta():
    """The check itself: each kind of read named above raises on ``meta``."""
    x = torch.randn(4, device="meta")
    reads = [lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: x.tolist(), lambda: x[x > 0],
             lambda: x.nonzero(), lambda: torch.unique(x), lambda: torch.equal(x, x)]
    for read in reads:
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize(("method", "overrides", "graphs"), [
    ("seco", [], 1),
    ("moco", [], 1),
    ("vclr", [], 1),
    ("corp_f", [], 1),
    ("corp_m", [], 1),
    ("corp_m", ["corp_m.relation=mixed"], 1),
    ("simclr", [], 1),
    ("mlfo", [], 2),  # its time orders are drawn once the backbone has given the levels' lengths
])
def test_a_compiled_step_is_one_graph(method, overrides, graphs):
    _, model, batch = laptop_step(method, overrides)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(batch["views"], batch["info"], torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    assert explanation.graph_count == graphs, [str(r.reason).splitlines()[0] for r in explanation.break_reasons]
