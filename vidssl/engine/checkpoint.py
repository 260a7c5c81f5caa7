"""Atomic checkpoints of tensors and plain data, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vidssl.errors import VidsslError


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a crash
    mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        intact = f"the last good checkpoint {path} is intact" if path.is_file() else "no checkpoint was written yet"
        raise VidsslError(f"{path}: cannot write a checkpoint ({exc.strerror or exc}); {intact}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """Delete ``.<name>.tmp<PID>`` files that processes killed mid-write left in ``folder`` (those of
    running processes stay); the removed paths."""
    removed = []
    for tmp in Path(folder).glob(f".{name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state dict is finite."""
    return all(bool(torch.isfinite(t).all()) for t in state.values() if torch.is_tensor(t) and t.is_floating_point())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely: only tensors and plain containers (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise VidsslError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, foreign formats
        raise VidsslError(f"{path}: not a loadable vidssl checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise VidsslError(f"{path}: not a vidssl pretraining checkpoint (missing model/config)")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise VidsslError(f"{path}: damaged checkpoint: 'step' is {step!r}, not a step count")
    return state


def check_resumable(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """What resuming needs beyond the weights: optimizer state and the RNG state."""
    rng = state.get("rng")
    if not isinstance(state.get("optimizer"), dict) or not isinstance(rng, dict) \
            or not isinstance(rng.get("torch"), torch.Tensor):
        raise VidsslError(f"{path}: damaged checkpoint: no optimizer or RNG state to resume from (it can "
                          "still be evaluated and exported)")


def load_weights(module: torch.nn.Module, weights: Any, path: str | os.PathLike[str], what: str) -> None:
    """``module.load_state_dict(weights, strict=True)``, or a VidsslError naming ``path`` and the
    keys that differ (a damaged checkpoint, or another method's or backbone's)."""
    expected = module.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise VidsslError(f"{path}: its weights are not a mapping of tensors")
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise VidsslError(f"{path}: its weights do not fit {what}: {len(missing)} missing (e.g. {missing[:3]}), "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another shape "
                          f"(e.g. {wrong[:3]})")
    module.load_state_dict(weights, strict=True)


def load_method(path: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """The config, the method (its weights loaded) and the raw state of a pretraining checkpoint."""
    from vidssl.engine.config import config_from_yaml_text
    from vidssl.methods import METHODS
    from vidssl.models.backbones import Backbone

    state = load_checkpoint(path)
    cfg = config_from_yaml_text(state["config"])
    method = METHODS[cfg.method](cfg.method_config(), Backbone(cfg.arch()), False)
    load_weights(method, state["model"], path, f"{cfg.method} on {cfg.arch()} (its saved config)")
    return cfg, method, state
