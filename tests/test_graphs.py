"""A compiled training step is one graph (MLFO's: two).

With CUDA graphs (``train.compile_mode=reduce-overhead``) each compiled graph is replayed by one
launch, and what runs between graphs runs eagerly, kernel by kernel: on an H100 the laptop
configs' overhead followed their steps' graph breaks (docs/benchmarks.md, "GPU"). So a step does
its host work (draws from its generator, the queues' snapshots) at its top, where it splits off
no graph, and builds index tensors with fixed shapes on the device.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vidssl.data.dataset import collate_samples
from vidssl.engine.config import laptop_config, load_config
from vidssl.engine.train import build_dataset, build_method


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
    cfg = load_config(laptop_config(method), ["train.batch_size=4", "data.synthetic_videos=40"] + overrides, method)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(build_dataset(cfg), batch_size=4, sampler=list(range(4)),
                                 collate_fn=collate_samples)))
    model = build_method(cfg, False).train()
    if hasattr(model, "set_epoch"):
        model.set_epoch(cfg.train.epochs - 1, cfg.train.epochs)  # every loss term on
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(batch["views"], batch["info"], torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    assert explanation.graph_count == graphs, [str(r.reason).splitlines()[0] for r in explanation.break_reasons]
