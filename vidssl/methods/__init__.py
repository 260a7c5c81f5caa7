"""Pretraining methods, one small file each, chosen from a plain dict."""

from vidssl.methods.moco import MoCoV2
from vidssl.methods.seco import SeCo

METHODS = {"seco": SeCo, "moco": MoCoV2}

__all__ = ["METHODS", "MoCoV2", "SeCo"]
