"""vidssl: self-supervised video representation learning (SeCo, VCLR, CORP, MLFO)."""

__version__ = "0.5.0"
