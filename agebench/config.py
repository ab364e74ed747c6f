"""YAML -> typed config. Files compose (``extends:``), ``key=value`` overrides use dotted keys, and an unknown
key is an error that names it: a typo must never silently fall back to a default in a benchmark.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agebench.errors import UserError


class ConfigError(UserError):
    """A config file or override a user wrote wrong: names the file and the key."""


@dataclass
class AugmentSection:
    scale_min: float = 0.8
    hflip: float = 0.5
    color_jitter: float = 0.2


@dataclass
class DataSection:
    manifest: str = "data/synth/manifest.csv"
    root: str | None = None
    name: str | None = None  # data set name used in results; defaults to the manifest's folder name
    img_size: int = 224
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 2
    crop_pct: float = 1.0
    allow_leaky_splits: bool = False
    use_cache: bool = True
    on_bad_image: str = "error"  # error | skip: what a training run does with an image it cannot decode
    augment: AugmentSection = field(default_factory=AugmentSection)


@dataclass
class ModelSection:
    name: str = "hybrid"
    pretrained: bool = False
    pretrained_path: str | None = None
    weights_dir: str | None = None  # local copies of pretrained weights (`agebench weights fetch ... --to DIR`)
    head_hidden: int = 256  # the MLP trunk shared by every head
    head_dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the backbone factory
    # A head name or {name: ..., its kwargs} (`agebench heads` lists them); null: the regression head, and
    # results keep the plain backbone name. Otherwise results are named "<backbone>+<head>".
    head: dict[str, Any] | str | None = None
    age_range: tuple[int, int] | None = None  # [min_age, max_age] of integer-age heads; null: the training split's
    # The name of another model of the same bench that this one ablates (e.g. the hybrid's trunk alone is the
    # ablation of the hybrid): the leaderboard prints their paired test as that component's contribution.
    ablation_of: str | None = None
    # The cell's name in results in place of the computed "<backbone>+<head>" (a bench model entry's `label:`).
    label: str | None = None
    # Fine-tuning regime: "none" trains every parameter; "backbone" freezes the backbone (a linear / MLP probe:
    # no gradients, no optimizer state, its normalisation statistics frozen) and trains the head alone.
    freeze: str = "none"
    # Partial fine-tuning: only the last K blocks of the backbone's block declaration (and what follows them,
    # e.g. a final norm) are trained, with the head; null: every block.
    train_last_blocks: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.head, dict) and not isinstance(self.head.get("name"), str):
            raise ConfigError(f"model.head: a mapping needs 'name' (a registered head), got {self.head!r}")
        if self.head is not None and not self.head_name:
            raise ConfigError("model.head: empty head name")
        if self.age_range is not None and not self.age_range[0] < self.age_range[1]:
            lo, hi = self.age_range
            raise ConfigError(f"model.age_range: [{lo}, {hi}] needs min_age < max_age")

    @property
    def head_name(self) -> str | None:
        return self.head if isinstance(self.head, str) or self.head is None else self.head["name"]

    @property
    def head_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.head.items() if k != "name"} if isinstance(self.head, dict) else {}

    @property
    def computed_name(self) -> str:
        """The backbone, plus "+<head>" when a head is set: the name a model gets without a ``label``."""
        return self.name if self.head is None else f"{self.name}+{self.head_name}"

    @property
    def cell_name(self) -> str:
        """The model's name in results: its ``label`` if set, else :attr:`computed_name`."""
        return self.label or self.computed_name


@dataclass
class OptimSection:
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_frac: float = 0.05  # share of all optimiser steps spent in linear warmup
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    loss: str = "adaptive"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    standardize_targets: bool = True
    # Layer-wise learning-rate decay (BEiT / MAE fine-tuning): with D declared blocks, block i (0 = nearest the
    # input) trains at lr * F^(D - i), the embeddings at lr * F^(D + 1), what follows the blocks and the head at
    # lr; null: off. The backbone's block declaration decides the blocks (agebench.models.registry).
    layer_decay: float | None = None
    backbone_lr_mult: float = 1.0  # multiplies every backbone learning rate (on top of layer_decay)


@dataclass
class EvalSection:
    tta: str = "none"  # none | flip: the test prediction averages the image's and its mirror's (recorded, flagged)


@dataclass
class LoggerSection:
    kind: str = "csv"  # csv | tensorboard | mlflow | wandb | none
    project: str = "agebench"  # W&B project, MLflow experiment
    name: str | None = None
    tracking_uri: str | None = None  # mlflow only; default: a file store under <run>/logs/mlruns


@dataclass
class FitConfig:
    seed: int = 0
    out_dir: str = "runs/fit"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    logger: LoggerSection = field(default_factory=LoggerSection)
    eval: EvalSection = field(default_factory=EvalSection)
    # Lightning Trainer arguments by their own names (max_epochs, devices, strategy, precision...).
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10})
    compile: bool = False  # torch.compile the backbone
    channels_last: bool = False


# ---------------------------------------------------------------- loading and merging


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; ``extends: other.yaml`` (or a list) is merged underneath, paths relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'extends' cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parents = data.pop("extends", None) or []
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = deep_merge(merged, load_yaml(path.parent / parent, (*_seen, path.resolve())))
    return deep_merge(merged, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` sets data['a']['b']; the value is parsed as YAML (numbers, booleans, lists, null)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


# ---------------------------------------------------------------- typed conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(tp)):
            raise ConfigError(f"{where}: expected a list of {len(typing.get_args(tp))} values, got {value!r}")
        pairs = zip(value, typing.get_args(tp), strict=True)
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(pairs))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_convert(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a did-you-mean hint."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if isinstance(v, tuple):
            return [clean(x) for x in v]
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(dataclasses.asdict(obj))


def validate_trainer_args(trainer: dict[str, Any], where: str = "trainer") -> None:
    """Trainer keys are Lightning's own argument names: check them against pl.Trainer's signature."""
    import inspect

    import pytorch_lightning as pl

    known = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    for key in trainer:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key '{where}.{key}': not a Lightning Trainer argument{hint}")


def load_fit_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> FitConfig:
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    config = from_dict(FitConfig, data)
    validate_trainer_args(config.trainer)
    return config


# Keys added after results were first published, with the default that reproduces the older behaviour:
# at that default they are left out of the hash, so cells finished by an older agebench stay "done".
HASH_NEUTRAL_DEFAULTS: dict[tuple[str, str], Any] = {
    ("data", "on_bad_image"): "error",  # 0.3
    ("model", "weights_dir"): None,  # 0.3; where weights are read from does not change them
    ("profile", "compile"): None,  # 0.3 (bench cells hash their profile settings too)
    ("model", "head"): None,  # 0.3; None is the regression head every older cell used
    ("model", "age_range"): None,  # 0.3; only integer-age heads use it
    ("eval", "tta"): "none",  # 0.4; test-time augmentation
    ("model", "ablation_of"): None,  # 0.5; a statement for the report, not a setting of the run
    ("logger", "tracking_uri"): None,  # 0.5; where MLflow logs does not change the run
    ("model", "freeze"): "none",  # 0.6; fine-tuning regimes: the defaults train every parameter as before
    ("model", "train_last_blocks"): None,  # 0.6
    ("optim", "layer_decay"): None,  # 0.6
    ("optim", "backbone_lr_mult"): 1.0,  # 0.6
    ("trainer", "num_nodes"): 1,  # 0.6; the launch scripts now pass it: one node hashes as before
}
# Keys that only name a run (like out_dir): never hashed, whatever their value.
NAME_KEYS: tuple[tuple[str, str], ...] = (("model", "label"),)  # 0.6
# Sections that only hold such keys: dropped from the hash when nothing in them differs from the default.
HASH_NEUTRAL_SECTIONS = ("eval",)


def config_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config: equal configs, equal hashes.

    ``out_dir`` is left out: where results are written does not change what they are; so are the keys of
    :data:`HASH_NEUTRAL_DEFAULTS` while they hold their default.
    """
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if k != "out_dir"}
    for (section, key), default in HASH_NEUTRAL_DEFAULTS.items():
        if isinstance(data.get(section), dict) and data[section].get(key, default) == default:
            data[section].pop(key, None)
    for section, key in NAME_KEYS:
        if isinstance(data.get(section), dict):
            data[section].pop(key, None)
    for section in HASH_NEUTRAL_SECTIONS:
        if data.get(section) == {}:
            data.pop(section)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def dump_yaml(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
