"""Pretraining methods, one small file each, chosen from a plain dict."""

from vidssl.methods.moco import MoCoV2
from vidssl.methods.seco import SeCo
from vidssl.methods.vclr import VCLR

METHODS = {"seco": SeCo, "moco": MoCoV2, "vclr": VCLR}

__all__ = ["METHODS", "VCLR", "MoCoV2", "SeCo"]
