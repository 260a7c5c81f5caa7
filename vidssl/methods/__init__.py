"""Pretraining methods, one small file each on the :class:`~vidssl.methods.base.Method` contract,
chosen from a plain dict (the config's method sections are built from it)."""

from vidssl.methods.base import DataSpec, Method
from vidssl.methods.corp import CORPf, CORPm, SimCLR
from vidssl.methods.mlfo import MLFO
from vidssl.methods.moco import MoCoV2
from vidssl.methods.seco import SeCo
from vidssl.methods.vclr import VCLR

METHODS: dict[str, type[Method]] = {"seco": SeCo, "moco": MoCoV2, "vclr": VCLR, "corp_f": CORPf, "corp_m": CORPm,
                                    "simclr": SimCLR, "mlfo": MLFO}

__all__ = ["METHODS", "MLFO", "VCLR", "CORPf", "CORPm", "DataSpec", "Method", "MoCoV2", "SeCo", "SimCLR"]
