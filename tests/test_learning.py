"""Slow learning test: a few minutes of SeCo pretraining on the CPU beats random init.

Measured on the development machine (2 cores, 2m30s for the whole test), laptop config
(``seco_laptop``: 600 steps), linear SVM on the appearance labels (5 classes, 80 test videos) with 8
frames per video: SeCo 47.5% top-1, random init 35.0% (mean of seeds 0 and 1): a 12.5-point margin.
The assertion keeps about half of it as headroom for numerical differences between machines.
"""

from __future__ import annotations

import pytest

from vidssl.engine.config import load_config
from vidssl.engine.train import train
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import load_encoder
from vidssl.eval.features import Protocol, extract
from vidssl.eval.linear import linear_svm

MARGIN = 0.06


def svm_top1(spec: str, cache) -> float:
    enc = load_encoder(spec)
    data, p = EvalData(labels="appearance"), Protocol("frames", 8, crop=32)
    tr, te = extract(enc, data, "train", p, cache), extract(enc, data, "test", p, cache)
    return linear_svm(tr.features, tr.labels, te.features, te.labels, len(tr.class_names)).report["top1"]


@pytest.mark.slow
def test_seco_beats_random_init_in_linear_accuracy(tmp_path):
    cfg = load_config("seco_laptop", [f"train.out={tmp_path / 'seco'}"])
    train(cfg)
    seco = svm_top1(str(tmp_path / "seco" / "checkpoint.pt"), tmp_path / "features")
    random_floor = (svm_top1("random:tiny2d", tmp_path / "features") +
                    svm_top1("random:tiny2d:1", tmp_path / "features")) / 2
    print(f"SeCo {seco:.3f} vs random init {random_floor:.3f}")
    assert seco > random_floor + MARGIN, (seco, random_floor)
