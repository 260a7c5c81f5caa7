"""Concatenating a batch's views without copying them."""

from __future__ import annotations

import torch


def cat_views(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``torch.cat(tensors)`` along dim 0, as a view where the tensors lie one after another in one
    storage, contiguous, as the views of a collated batch do (``collate_samples`` stacks them into
    one tensor, in a loader worker too): the same values without the copy. Otherwise (separate
    tensors, another layout, tensors that need a gradient, inside a compiled graph, which fuses the
    copy anyway) ``torch.cat``."""
    if torch.compiler.is_compiling():
        return torch.cat(list(tensors))
    first = tensors[0]
    storage, end = first.untyped_storage().data_ptr(), first.storage_offset()
    for t in tensors:
        if not (t.storage_offset() == end and t.is_contiguous() and not t.requires_grad and t.dtype == first.dtype
                and t.shape[1:] == first.shape[1:] and t.untyped_storage().data_ptr() == storage):
            return torch.cat(list(tensors))
        end += t.numel()
    return first.as_strided((sum(len(t) for t in tensors), *first.shape[1:]), first.stride())
