"""Pretraining methods, one small file each, chosen from a plain dict."""

from vidssl.methods.corp import CORPf, CORPm, SimCLR
from vidssl.methods.moco import MoCoV2
from vidssl.methods.seco import SeCo
from vidssl.methods.vclr import VCLR

METHODS = {"seco": SeCo, "moco": MoCoV2, "vclr": VCLR, "corp_f": CORPf, "corp_m": CORPm, "simclr": SimCLR}

__all__ = ["METHODS", "VCLR", "CORPf", "CORPm", "MoCoV2", "SeCo", "SimCLR"]
