"""Losses as pure functions of tensors (no state, no communication: callers gather first).

Conventions: embeddings are L2-normalised by the caller; ``tau`` is the softmax temperature;
every loss returns the mean over the batch, computed in float32.
"""

from vidssl.losses.contrastive import info_nce, seco_inter_loss, seco_intra_loss

__all__ = ["info_nce", "seco_inter_loss", "seco_intra_loss"]
