"""Pretraining methods, one small file each, chosen from a plain dict."""

from vidssl.methods.corp import CORPf, CORPm, SimCLR
from vidssl.methods.mlfo import MLFO
from vidssl.methods.moco import MoCoV2
from vidssl.methods.seco import SeCo
from vidssl.methods.vclr import VCLR

METHODS = {"seco": SeCo, "moco": MoCoV2, "vclr": VCLR, "corp_f": CORPf, "corp_m": CORPm, "simclr": SimCLR,
           "mlfo": MLFO}

__all__ = ["METHODS", "MLFO", "VCLR", "CORPf", "CORPm", "MoCoV2", "SeCo", "SimCLR"]
