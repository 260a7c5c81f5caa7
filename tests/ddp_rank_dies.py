"""Run under torchrun by tests/test_ddp.py: rank 1 dies (os._exit) in its third training step;
rank 0 must not hang."""

from __future__ import annotations

import os
import sys

import vidssl.methods.seco as seco_module
from vidssl.engine.config import load_config
from vidssl.engine.train import train

if int(os.environ["RANK"]) == 1:
    real, calls = seco_module.seco_inter_loss, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os._exit(17)  # as a killed process: no exception, no clean-up
        return real(*args, **kwargs)

    seco_module.seco_inter_loss = dying

train(load_config(None, sys.argv[1:]))
