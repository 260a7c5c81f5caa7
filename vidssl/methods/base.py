"""The contract every pretraining method follows, and what a method tells the data pipeline.

A method is an ``nn.Module`` built from its config section, a backbone and whether it runs under
DDP. Per step the engine calls ``method(views, info, generator)`` and gets the loss to minimise
and its named parts (for logging): the loss terms, plus ``<head>_acc`` entries, the training
accuracy of a classification head (an order head's), which are not part of the loss. A method file
is wiring only: losses live in ``vidssl.losses``, stateful building blocks (momentum encoders, queues, shuffle-BN) in
``vidssl.modules``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vidssl.data.dataset import Sampler
from vidssl.models.backbones import Backbone

LAYOUTS = ("frame", "clip")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of rows whose highest logit is the label (logged, not optimised)."""
    return (logits.detach().argmax(-1) == labels).float().mean()


@dataclass(frozen=True)
class DataSpec:
    """What a method's samples look like.

    - ``sampler``: which frames of a video a sample takes (``vidssl.data.samplers``).
    - ``layout``: ``frame`` (each view a ``(C, H, W)`` frame, 2D backbones) or ``clip`` (each view a
      ``(C, T, H, W)`` clip, 3D backbones).
    - ``repeat``: augmented copies per sampled view (SeCo ``(2, 1, 1)``: two views of the anchor);
      ``None`` is one each.
    - ``queue_keys``: for each queue-size key of the method's config, the keys one video adds to
      that queue per step (to warn when a queue outlasts an epoch).
    """

    sampler: Sampler
    layout: str
    repeat: tuple[int, ...] | None = None
    queue_keys: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"DataSpec.layout must be one of {LAYOUTS}, got {self.layout!r}")


class Method(nn.Module, metaclass=ABCMeta):
    """Base class of the pretraining methods.

    Subclasses set ``Config`` (a dataclass whose defaults are the laptop setting and which has a
    ``validate()`` raising ``ValueError``), implement :meth:`data_spec`, ``forward`` and the
    ``backbone`` property, and may override :meth:`set_epoch` (epoch-based stages) and
    :attr:`unused_parameters`."""

    Config: ClassVar[type]

    def __init__(self, cfg: Any, distributed: bool = False) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.distributed = distributed  # gather negatives and shuffle keys across ranks

    @staticmethod
    @abstractmethod
    def data_spec(cfg: Any) -> DataSpec:
        """The samples this method trains on, given its config section."""

    @property
    @abstractmethod
    def backbone(self) -> Backbone:
        """The encoder that is evaluated and exported."""

    @property
    def unused_parameters(self) -> bool:
        """Whether some parameters get no gradient in some steps (DDP must then look for them)."""
        return False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called before every step with the current epoch and the run's number of epochs."""

    @abstractmethod
    def forward(self, views: list[torch.Tensor], info: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``views``: the batch's views in the order of the data spec's plan (each ``(B, C, H, W)``
        or ``(B, C, T, H, W)``); ``info``: the sampler's labels (``(B, ...)`` tensors);
        ``generator``: the step's host generator (shuffles, draws). Returns ``(loss, parts)``."""
