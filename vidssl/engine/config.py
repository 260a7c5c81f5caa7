"""Typed configuration: dataclasses whose defaults are the laptop settings (``vidssl pretrain
--method seco`` with no other argument trains in minutes on CPU); the papers' settings are YAML
files in ``vidssl/configs/``. Dataclasses are loaded from YAML (``yaml.safe_load``) and
``key=value`` overrides. An unknown key or a value of the wrong type is a :class:`ConfigError` naming the key and
the file (or ``command line``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidssl.data.dataset import SHORT_VIDEO_POLICIES
from vidssl.data.decoders import BACKENDS
from vidssl.data.sources import LAYOUTS
from vidssl.data.synthetic import DYNAMICS, LABEL_SETS, SyntheticVideos
from vidssl.errors import ConfigError
from vidssl.methods import METHODS
from vidssl.models.init import FORMATS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" (built in) or a dataset path
    layout: str = "auto"
    split: int = 1
    subset: str = "train"
    root: str = ""
    backend: str = "auto"
    num_workers: int = 2
    strict: bool = False
    short_videos: str = "skip"
    synthetic_videos: int = 400
    synthetic_size: int = 32  # laptop: rendered at 32 px for speed (evaluation renders 64 px)
    synthetic_frames: int = 64
    synthetic_seed: int = 0
    synthetic_labels: str = "motion"
    synthetic_clips_per_group: int = 2
    synthetic_dynamics: str = "arrow"  # "arrow" (irreversible, the default) or "reversible" (docs/data.md)

    def synthetic(self) -> SyntheticVideos:
        """The built-in videos these settings describe."""
        return SyntheticVideos(self.synthetic_videos, self.synthetic_size, self.synthetic_frames, self.synthetic_seed,
                               self.synthetic_labels, self.synthetic_clips_per_group, dynamics=self.synthetic_dynamics)


@dataclass
class AugmentConfig:
    """The MoCo-v2 recipe (docs/data.md). The defaults are the laptop setting: at 32 px and a few
    hundred steps the paper's (scale 0.2-1, jitter p 0.8, grayscale p 0.2) leaves too little signal
    shared by two views; the paper configs set the paper's values."""

    size: int = 32
    scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    p_jitter: float = 0.3
    p_gray: float = 0.0
    p_blur: float = 0.5
    p_flip: float | None = None  # None: the dataset's default (flip_default: 0 where labels name a direction)
    shared_crop: bool = False  # one crop box and flip for all of a sample's views (official SeCo/VCLR: per view)
    per_frame_jitter: bool = False
    per_frame_gray: bool = False
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class ModelConfig:
    arch: str = "auto"  # auto: tiny3d for methods that take clips, tiny2d for frame methods
    sync_bn: bool = False  # SyncBatchNorm across ranks (CORP, MLFO, CVRL); shuffle-BN methods keep it off
    init: str = ""  # weights the backbone starts from (vidssl/models/init.py); "none": from scratch on purpose
    init_format: str = "auto"  # auto | torchvision | moco | seco | vclr | vidssl
    init_from: str = ""  # what the paper starts from: a run must then give model.init (a path, or none)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | lars | adam
    lr: float = 0.1  # learning rate at a global batch of ref_batch; scaled linearly with the batch
    ref_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_all: bool = False  # decay biases and norms too (the official MoCo, SeCo and VCLR code does)
    warmup_epochs: float = 2.0
    schedule: str = "cosine"  # cosine | step
    milestones: list[float] = field(default_factory=lambda: [0.7])  # step schedule, fractions
    clip_grad_norm: float = 0.0  # > 0: scale the gradients down to this global norm before each step
    gamma: float = 0.1


NAN_POLICIES = ("stop", "skip")
# torch.compile's modes; the two with CUDA graphs replay each step's kernels in one launch (on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """A ConfigError naming ``key`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16  # global: summed over ranks and accumulation steps
    accumulate: int = 1
    max_steps: int = 0  # stop after this many optimizer steps (0: train all epochs)
    seed: int = 0
    out: str = "runs/pretrain"
    ckpt_every: int = 200  # optimizer steps between checkpoints (and one at every epoch end)
    log_every: int = 5
    amp: bool = True  # bf16 autocast on GPU (logits and losses stay float32)
    device: str = "auto"  # auto | cpu | cuda
    nan_policy: str = "stop"  # stop | skip: what a non-finite loss does
    dist_timeout_s: int = 600  # a collective waiting longer (e.g. for a dead rank on another node) fails
    threads: int = 0  # intra-op threads; 0: the cores the loader workers leave; -1: PyTorch's (engine/threads.py)
    # torch.compile the step: false, true (torch's default mode) or a mode of COMPILE_MODES (static
    # shapes; the first steps compile)
    compile: bool | str = False
    monitor_every: int = 0  # steps between kNN top-1 checks on a labelled held-out split (0: off)
    monitor_videos: int = 200  # gallery and query videos of each check
    loggers: list[str] = field(default_factory=list)  # extra backends: wandb, mlflow (extras of the same name)


@dataclass
class _Sections:
    """The sections every run has; :class:`Config` adds one per method of ``METHODS``."""

    method: str = "seco"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def method_config(self) -> Any:
        return getattr(self, self.method)

    def arch(self) -> str:
        """The backbone: ``model.arch``, or for ``auto`` the laptop backbone of the method's input."""
        if self.model.arch != "auto":
            return self.model.arch
        return "tiny3d" if METHODS[self.method].data_spec(self.method_config()).layout == "clip" else "tiny2d"

    def to_dict(self) -> dict[str, Any]:
        """The common sections and the active method's (the others do not affect the run)."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(_Sections)}
        out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in common.items()}
        out[self.method] = dataclasses.asdict(self.method_config())
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# one section per registered method, named as the method, holding its Config's defaults
Config = dataclasses.make_dataclass(
    "Config", [(name, cls.Config, field(default_factory=cls.Config)) for name, cls in METHODS.items()],
    bases=(_Sections,))
Config.__module__ = __name__
Config.__doc__ = "A run's configuration: the common sections and one section per method (``METHODS``)."


def _coerce(value: Any, typ: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        for t in typing.get_args(typ):
            try:
                return _coerce(value, t, key, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key}: {value!r} is not a valid {typ}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(typ)[:1] or (Any,)
        return [_coerce(v, item, key, where) for v in value]
    if typ is Any:
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if typ is type(None) and value is None:
        return None
    if typ in (int, float, str, bool) and (not isinstance(value, typ) or (typ is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: {key}: expected {typ.__name__}, got {value!r}")
    return value


def _apply(obj: Any, data: dict[str, Any], where: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{full}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{full}' must be a mapping of keys")
            _apply(current, value, where, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full, where))


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a built-in config (``vidssl/configs/<name>.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    builtin = CONFIG_DIR / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name!r} not found (a YAML file, or one of: {known})")


def laptop_config(method: str) -> str | None:
    """The name of ``method``'s built-in laptop recipe (``<method>_laptop``), if it has one."""
    return f"{method}_laptop" if (CONFIG_DIR / f"{method}_laptop.yaml").is_file() else None


def load_config(path: str | None = None, overrides: list[str] | None = None,
                method: str | None = None) -> Config:
    """Defaults, then the YAML file, then ``--method``, then ``key=value`` overrides."""
    cfg = Config()
    if path:
        file = resolve_config_path(path)
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of keys")
        _apply(cfg, data, str(file))
    if method:
        cfg.method = method
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: {key}: cannot parse {raw!r} ({exc})") from exc
        _apply(cfg, _nested(key.strip(), value), "command line")
    if cfg.method not in METHODS:
        raise ConfigError(f"method: unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    try:
        cfg.method_config().validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    validate(cfg)
    return cfg


def value_at(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``train.batch_size``)."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _finite(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def ok(x: Any) -> bool:
        try:
            finite = math.isfinite(x)
        except OverflowError:  # an integer beyond any float
            return False
        return finite and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    return ok


_PROBABILITY = _finite(0.0, 1.0)
# key -> (the condition a value must meet, how the error describes it); checked before any training
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "train.epochs": (_finite(1), ">= 1"),
    "train.batch_size": (_finite(1), ">= 1"),
    "train.accumulate": (_finite(1), ">= 1"),
    "train.max_steps": (_finite(0), ">= 0 (0: all epochs)"),
    "train.seed": (_finite(0, 2**32, hi_open=True), "in [0, 2**32)"),
    "train.ckpt_every": (_finite(1), ">= 1"),
    "train.log_every": (_finite(1), ">= 1"),
    "train.dist_timeout_s": (_finite(1), ">= 1"),
    "train.threads": (_finite(-1), ">= -1 (0: automatic, -1: PyTorch's)"),
    "train.monitor_every": (_finite(0), ">= 0 (0: off)"),
    "train.monitor_videos": (_finite(2), ">= 2"),
    "optim.lr": (_finite(0), ">= 0 and finite"),
    "optim.ref_batch": (_finite(1), ">= 1"),
    "optim.momentum": (_finite(0, 1, hi_open=True), "in [0, 1)"),
    "optim.weight_decay": (_finite(0), ">= 0 and finite"),
    "optim.warmup_epochs": (_finite(0), ">= 0 and finite"),
    "optim.clip_grad_norm": (_finite(0), ">= 0 and finite (0: off)"),
    "optim.gamma": (_finite(0, 1, lo_open=True), "in (0, 1]"),
    "data.num_workers": (_finite(0, 256), "in [0, 256]"),
    "data.split": (_finite(1, 10), "in [1, 10]"),
    "data.synthetic_videos": (_finite(1, 10**6), "in [1, 1e6]"),
    "data.synthetic_size": (_finite(8, 1024), "in [8, 1024]"),
    "data.synthetic_frames": (_finite(1, 10**5), "in [1, 1e5]"),
    "data.synthetic_seed": (_finite(0, 2**32, hi_open=True), "in [0, 2**32)"),
    "data.synthetic_clips_per_group": (_finite(1), ">= 1"),
    "augment.size": (_finite(8, 4096), "in [8, 4096]"),
    "augment.p_jitter": (_PROBABILITY, "in [0, 1]"),
    "augment.p_gray": (_PROBABILITY, "in [0, 1]"),
    "augment.p_blur": (_PROBABILITY, "in [0, 1]"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "train.nan_policy": NAN_POLICIES, "train.device": ("auto", "cpu", "cuda"),
    "optim.name": ("sgd", "lars", "adam"), "optim.schedule": ("cosine", "step"),
    "data.backend": BACKENDS, "data.short_videos": SHORT_VIDEO_POLICIES, "data.layout": LAYOUTS,
    "data.synthetic_labels": LABEL_SETS, "data.synthetic_dynamics": DYNAMICS, "model.init_format": FORMATS,
}


def validate(cfg: Config) -> None:
    """Every value in range and every choice known, before anything is built: a ConfigError names
    the key."""
    for key, (ok, rule) in RANGES.items():
        if not ok(value_at(cfg, key)):
            raise ConfigError(f"{key}: must be {rule}, got {value_at(cfg, key)!r}")
    for key, allowed in CHOICES.items():
        check_choice(key, value_at(cfg, key), allowed)
    if isinstance(cfg.train.compile, str):
        check_choice("train.compile", cfg.train.compile, COMPILE_MODES)
    a = cfg.augment
    if a.p_flip is not None and not _PROBABILITY(a.p_flip):
        raise ConfigError(f"augment.p_flip: must be in [0, 1] or null, got {a.p_flip!r}")
    if len(a.scale) != 2 or not (0 < a.scale[0] <= a.scale[1] <= 1):
        raise ConfigError(f"augment.scale: must be [min, max] with 0 < min <= max <= 1, got {a.scale!r}")
    if len(a.mean) != 3 or len(a.std) != 3 or not all(math.isfinite(x) for x in a.mean) or min(a.std) <= 0:
        raise ConfigError(f"augment.mean/std: three finite values each, std > 0, got {a.mean!r} / {a.std!r}")
    if not all(0 < m < 1 for m in cfg.optim.milestones):
        raise ConfigError(f"optim.milestones: fractions of training in (0, 1), got {cfg.optim.milestones!r}")


def asked_keys(path: str | None, overrides: list[str] | None, method: str | None) -> set[str]:
    """The dotted keys a command line sets: its ``--config`` file's, its overrides' and ``method``."""
    keys = {item.split("=", 1)[0].strip() for item in overrides or [] if "=" in item}
    if method:
        keys.add("method")

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(f"{prefix}{k}")

    if path:
        data = yaml.safe_load(resolve_config_path(path).read_text())
        walk(data if isinstance(data, dict) else {}, "")
    return keys


def config_from_yaml_text(text: str) -> Config:
    """Rebuild a config saved in a checkpoint (safe YAML)."""
    cfg = Config()
    try:
        data = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError("checkpoint config: not a mapping of keys (a damaged or foreign checkpoint)")
    _apply(cfg, data, "checkpoint config")
    if cfg.method not in METHODS:
        raise ConfigError(f"checkpoint config: unknown method {cfg.method!r}")
    return cfg
