"""Losses as pure functions of tensors (no state, no communication: callers gather first).

Conventions: embeddings are L2-normalised by the caller; ``tau`` is the softmax temperature;
every loss returns the mean over the batch.
"""

from vidssl.losses.contrastive import info_nce, seco_inter_loss, seco_intra_loss
from vidssl.losses.order import order_cross_entropy
from vidssl.losses.total import sum_parts

__all__ = ["info_nce", "order_cross_entropy", "seco_inter_loss", "seco_intra_loss", "sum_parts"]
