"""Momentum (EMA) encoders.

Policy for BatchNorm buffers: the momentum copy keeps its *own* running statistics, computed by
its own forward passes in train mode (as MoCo); only parameters are averaged. Buffers are never
copied from the online network after construction.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to be updated by :func:`ema_update_`."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def parameter_list(module: nn.Module) -> list[nn.Parameter]:
    """``list(module.parameters())``: the same parameters in the same order (depth-first, each
    shared parameter once), by a plain walk over ``_modules``, about 3x cheaper than the generator
    chain of ``parameters()`` (which the EMA update would pay twice per step)."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    stack = [module]
    while stack:
        mod = stack.pop()
        for p in mod._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        stack.extend(m for m in reversed(mod._modules.values()) if m is not None)
    return out


def _dense(p: torch.Tensor) -> bool:
    """Whether ``p`` fills ``numel`` consecutive elements of its storage (contiguous in a memory format)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return p.is_contiguous() or (p.dim() in formats and p.is_contiguous(memory_format=formats[p.dim()]))


_registrations = 0  # parameters and submodules registered on any module since the first FlatPair


def _count_registration(*_: object) -> None:
    global _registrations
    _registrations += 1


@functools.cache
def _watch_registrations() -> None:
    """Counts every parameter and submodule registration (``module.x = ...``, ``load_state_dict``
    with ``assign=True``), so that :func:`ema_update_` knows without walking both networks that
    their parameters are still the objects it paired."""
    torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)
    torch.nn.modules.module.register_module_module_registration_hook(_count_registration)


@dataclass
class FlatPair:
    """The target's and the online network's parameters as views of one flat buffer each, laid out
    alike, so that the EMA is one elementwise ``lerp_`` over a buffer instead of one per parameter
    (on the CPU ``torch._foreach_lerp_`` runs a kernel per parameter; benchmarks.md). ``flat_target``
    is ``None`` where the parameters cannot share a buffer (mixed dtypes or devices, layouts that
    differ between the two). ``pointers`` are the parameters' data pointers, which change when
    anything re-allocates them (``.to(device)``, a channels-last conversion); ``registrations`` the
    count of parameter and submodule registrations when the pair was last checked against a walk of
    both networks."""

    target: list[torch.Tensor]
    online: list[torch.Tensor]
    flat_target: torch.Tensor | None
    flat_online: torch.Tensor | None
    pointers: tuple[int, ...]
    registrations: int
    online_id: int  # id() of the online network: a network made later registers parameters first

    @staticmethod
    @torch.no_grad()
    def build(target: list[torch.Tensor], online: list[torch.Tensor], online_module: nn.Module) -> FlatPair:
        """Moves both lists' data into flat buffers (the same values, shapes and strides)."""
        _watch_registrations()
        first = online[0] if online else None
        shareable = first is not None and all(
            k.dtype == q.dtype == first.dtype and k.device == q.device == first.device
            and k.shape == q.shape and k.stride() == q.stride() and _dense(k) and _dense(q)
            for k, q in zip(target, online, strict=True))
        flats: list[torch.Tensor | None] = [None, None]
        if shareable:
            total = sum(p.numel() for p in online)
            for side, params in enumerate((target, online)):
                flat = torch.empty(total, dtype=first.dtype, device=first.device)
                offset = 0
                for p in params:
                    view = flat.as_strided(p.shape, p.stride(), offset)
                    view.copy_(p)
                    p.data = view
                    offset += p.numel()
                flats[side] = flat
        return FlatPair(target, online, flats[0], flats[1], _pointers(target, online), _registrations,
                        id(online_module))

    def holds(self, target: nn.Module, online: nn.Module) -> bool:
        """Whether the pair still holds the networks' parameters, in place. Without a registration
        since the last check, only the pointers are compared; otherwise both networks are walked."""
        if self.online_id != id(online) or _pointers(self.target, self.online) != self.pointers:
            return False
        if self.registrations != _registrations:
            if not _identical(parameter_list(target) + parameter_list(online), self.target + self.online):
                return False
            self.registrations = _registrations
        return True

    def lerp_(self, weight: float) -> None:
        """``target <- target + weight * (online - target)``, over the flat buffers where there are."""
        if self.flat_target is not None:
            self.flat_target.lerp_(self.flat_online, weight)
        elif self.target:
            torch._foreach_lerp_(self.target, self.online, weight)


def _pointers(target: list[torch.Tensor], online: list[torch.Tensor]) -> tuple[int, ...]:
    return tuple(p.data_ptr() for p in target) + tuple(p.data_ptr() for p in online)


def _identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _paired_parameters(target: nn.Module, online: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    pk, pq = parameter_list(target), parameter_list(online)
    if len(pk) != len(pq):
        raise ValueError(f"EMA: the target has {len(pk)} parameters, the online network {len(pq)}")
    return pk, pq


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter (MoCo eq. 2).

    Eagerly, both networks' parameters live in one flat buffer each (:class:`FlatPair`, built on
    the first update and again whenever a parameter was replaced or moved) and the update is one
    ``lerp_``: elementwise, so bit-identical to a lerp per parameter. Inside a compiled graph it is
    one multi-tensor lerp over the parameter lists."""
    if torch.compiler.is_compiling():
        torch._foreach_lerp_(*_paired_parameters(target, online), 1.0 - momentum)
        return
    pair = target.__dict__.get("_ema_flat_pair")  # a plain attribute: not a submodule, not in state_dict
    if pair is None or not pair.holds(target, online):
        pair = FlatPair.build(*_paired_parameters(target, online), online)
        target.__dict__["_ema_flat_pair"] = pair
    pair.lerp_(1.0 - momentum)
