"""A bench config expanded into cells: one (model, data set, seed) each, with its fully resolved fit config.

The bench YAML has top-level ``models``, ``datasets``, ``seeds``, ``trainer`` (Lightning Trainer arguments by
their own names) and, optionally, ``data`` / ``model`` / ``optim`` / ``logger`` defaults that every cell shares
(the sections of a fit config) plus ``profile`` settings. A model entry is a name or a mapping with ``name`` and
per-model sections (``model``, ``optim``, ``trainer``, ``data``) and ``head`` (short for ``model.head``); a data
set entry maps its name to ``data`` fields (at least ``manifest``). A head set for one model replaces the shared
one (head settings are never merged across levels), and names the cell ``<model>+<head>``; a model entry's
``label`` names it instead, so one backbone can be entered twice (two variants). Every cell's config is validated
before anything runs, heads included.

Factor grids: a top-level ``grid`` maps dotted fit-config keys to lists of values, e.g.
``grid: {data.img_size: [64, 96], model.freeze: [none, backbone]}``; every model entry becomes one cell per
combination, labelled ``<name>,img_size=64,freeze=none`` (the key's last part, or the whole key where two last
parts are alike; folder-safe, never ``+`` or ``@fold``). A value may be written ``{value: V, label: TEXT}`` to
show TEXT in place of a long value (a checkpoint path). A grid key also set in a model entry is an error. The
cell's metrics.json records ``factors`` ({key: the value, or its label}) and ``variant_of`` (the entry's name),
which the leaderboard groups by. Settings fixed when a data set is prepared (crop margin, alignment) are not
config keys: cross them by listing the prepared variants as data set entries.

Cross-dataset evaluation: ``eval_on`` (top level, or in a data set entry, which wins) names other data sets, or
``all``, whose test splits each trained cell also predicts, with the target's own data settings (root, cache,
crop) at the cell's image size. A data set entry with ``eval_only: true`` trains no cells: it only serves as a
target. The targets are not part of a cell's config hash: adding one evaluates the finished cells' best
checkpoints on it instead of retraining them.

Folds: a data set entry with ``folds: OUT/folds.json`` (what ``agebench prepare --fold all`` writes, e.g. FG-NET
leave-one-person-out) instead of ``manifest`` becomes one data set per fold, ``<name>@fold<NN>``; the
leaderboard pools the folds of a model and seed back into one ``<name>`` row (each image predicted once, by the
model whose fold held it out). Fold cells predict no cross-dataset targets: 82 LOPO models each predicting a
target would not pool into one figure.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.config import (
    ConfigError,
    DataSection,
    FitConfig,
    apply_overrides,
    config_hash,
    deep_merge,
    from_dict,
    load_yaml,
    to_dict,
    validate_trainer_args,
)
from agebench.errors import UserError


@dataclass
class ProfileSection:
    batch_size: int | None = None  # default: the evaluation batch size
    warmup: int = 10
    iters: int = 30
    channels_last: bool = False
    compile: str | None = None  # torch.compile mode for the timed model, e.g. reduce-overhead (GPU)


@dataclass
class BenchConfig:
    models: list[Any]
    datasets: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [0])
    trainer: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    profile: ProfileSection = field(default_factory=ProfileSection)
    compile: bool = False
    channels_last: bool = False
    eval_on: list[str] | str | None = None  # data sets (or "all") whose test splits every cell also predicts
    grid: dict[str, Any] = field(default_factory=dict)  # dotted fit-config key -> values crossed for every model


DATASET_KEYS = ("eval_on", "eval_only", "folds")  # keys of a data set entry that are not `data` fields
FOLD_SEPARATOR = "@fold"


@dataclass
class Cell:
    dataset: str
    model: str
    seed: int
    fit: dict[str, Any]  # a resolved FitConfig as plain data
    profile: ProfileSection
    cross: dict[str, dict[str, Any]] = field(default_factory=dict)  # target data set -> its `data` section
    fold: dict[str, Any] | None = None  # {"of": data set, "index": k, "n_folds": n} for a cell of a fold protocol
    factors: dict[str, Any] = field(default_factory=dict)  # grid key -> this cell's value (empty: not a grid)
    variant_of: str | None = None  # the model entry's name when the cell is one of its grid variants

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/seed{self.seed}"

    @functools.cached_property
    def config_hash(self) -> str:
        """The hash of the resolved fit config and the profile settings; a head's with all its settings."""
        from agebench.validate import hashed_config

        return config_hash(hashed_config({**self.fit, "profile": vars(self.profile)}))


def load_bench_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> BenchConfig:
    data = apply_overrides(load_yaml(path), overrides or [])
    for key in ("models", "datasets"):
        if key not in data:
            raise ConfigError(f"{path}: missing top-level key {key!r}")
    cfg = from_dict(BenchConfig, data)
    if not cfg.models or not cfg.datasets or not cfg.seeds:
        raise ConfigError(f"{path}: models, datasets and seeds must each list at least one entry")
    validate_trainer_args(cfg.trainer)
    return cfg


def _model_entry(entry: Any, index: int) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        extra = {k: v for k, v in entry.items() if k != "name"}
        unknown = sorted(set(extra) - {"model", "optim", "trainer", "data", "head", "label"})
        if unknown:
            raise ConfigError(
                f"models[{index}]: unknown key(s) {', '.join(unknown)} (model, optim, trainer, data, head, label)"
            )
        for key in ("head", "label"):
            if key in extra:
                extra["model"] = {**extra.get("model", {}), key: extra.pop(key)}
        return entry["name"], extra
    raise ConfigError(f"models[{index}]: expected a name or a mapping with 'name', got {entry!r}")


def _targets(cfg: BenchConfig, ds_name: str, ds: dict[str, Any]) -> list[str]:
    """The data sets whose test splits cells trained on ``ds_name`` also predict (never ``ds_name`` itself)."""
    where = f"datasets.{ds_name}.eval_on" if "eval_on" in ds else "eval_on"
    value = ds.get("eval_on", cfg.eval_on)
    if value is None or FOLD_SEPARATOR in ds_name:  # fold models are pooled into one row; their targets are not
        return []
    if value == "all":  # every other data set; a fold's test split is a sliver of its set, so no folds
        return [name for name in cfg.datasets if name != ds_name and FOLD_SEPARATOR not in name]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of data set names or 'all', got {value!r}")
    unknown = [v for v in value if v not in cfg.datasets]
    if unknown:
        raise ConfigError(f"{where}: unknown data set(s) {', '.join(unknown)}; defined: {', '.join(cfg.datasets)}")
    return [v for v in dict.fromkeys(value) if v != ds_name]


def expand_folds(datasets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Data set entries with ``folds`` replaced by one entry per fold, and each fold's {"of", "index", "n_folds"}."""
    out: dict[str, Any] = {}
    folds: dict[str, dict[str, Any]] = {}
    for name, ds in datasets.items():
        if not isinstance(ds, dict) or "folds" not in ds:
            out[name] = ds
            continue
        if "manifest" in ds:
            raise ConfigError(f"datasets.{name}: give either manifest or folds, not both")
        index_file = Path(str(ds["folds"]))
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            entries = [(int(f["fold"]), str(f["manifest"])) for f in index["folds"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"datasets.{name}.folds: {index_file} is not a readable folds.json of `agebench prepare --fold all` "
                f"({type(err).__name__}: {err})"
            ) from None
        width = max(2, len(str(len(entries) - 1)))
        for k, manifest in entries:
            fold_name = f"{name}{FOLD_SEPARATOR}{k:0{width}d}"
            out[fold_name] = {k2: v for k2, v in ds.items() if k2 != "folds"} | {
                "manifest": str(index_file.parent / manifest)
            }
            folds[fold_name] = {"of": name, "index": k, "n_folds": len(entries)}
    return out, folds


def _grid_key(key: str, values: Any) -> tuple[str, ...]:
    """A grid key as a path into a fit config, checked against FitConfig's fields (``trainer.*``: Lightning's)."""
    parts = tuple(str(key).split("."))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
    if len(values) != len({json.dumps(v, sort_keys=True, default=str) for v in values}):
        raise ConfigError(f"grid.{key}: a value is listed twice: {values!r}")
    node: Any = FitConfig
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else None
        if fields is None:  # a free mapping (model.kwargs, trainer): any key below it
            break
        if ".".join(parts) in ("model.name", "model.label"):
            raise ConfigError(f"grid.{key}: cross models by listing them under models:, not in grid:")
        if part not in fields or part in ("seed", "out_dir"):
            hint = "seeds are crossed by `seeds:`" if part == "seed" else f"known: {', '.join(sorted(fields))}"
            raise ConfigError(f"grid.{key}: unknown config key {'.'.join(parts[: i + 1])!r} ({hint})")
        node = typing.get_type_hints(node)[part] if dataclasses.is_dataclass(node) else None
        if i == len(parts) - 1 and dataclasses.is_dataclass(node):
            raise ConfigError(f"grid.{key}: {key!r} is a section; give one of its keys")
    if parts[0] == "trainer" and len(parts) == 2:
        validate_trainer_args({parts[1]: None}, where="grid: trainer")
    return parts


def _has_path(data: dict[str, Any], parts: tuple[str, ...]) -> bool:
    node: Any = data
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_path(data: dict[str, Any], parts: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = dict(data)
    if len(parts) == 1:
        out[parts[0]] = value
    else:
        out[parts[0]] = _set_path(out.get(parts[0]) or {}, parts[1:], value)
    return out


def _value_text(value: Any) -> str:
    """A factor's value as it appears in a cell name: YAML spelling, folder-safe characters only."""
    if isinstance(value, list):
        text = "x".join(_value_text(v) for v in value)
    else:
        text = json.dumps(value) if value is None or isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-") or "-"


def flat_grid(grid: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{model: {freeze: [...]}}`` (nested YAML, or a dotted override) -> ``{"model.freeze": [...]}``."""
    out: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            out.update(flat_grid(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _labelled(key: str, value: Any) -> tuple[Any, Any]:
    """(the setting, what names it): ``{value: V, label: TEXT}`` -> (V, TEXT); any other value names itself."""
    if isinstance(value, dict):
        if set(value) != {"value", "label"} or not isinstance(value["label"], str) or not value["label"]:
            raise ConfigError(
                f"grid.{key}: a mapping value needs exactly 'value' and a non-empty 'label', got {value!r}"
            )
        return value["value"], value["label"]
    return value, value


def grid_combinations(grid: dict[str, Any]) -> list[dict[str, tuple[Any, Any]]]:
    """Every combination of the grid's values as {key: (setting, name)}, the first key varying slowest; [{}]
    without a grid."""
    for key, values in grid.items():
        _grid_key(key, values)
    keys = list(grid)
    options = [[_labelled(k, v) for v in grid[k]] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def grid_label(base: str, factors: dict[str, Any]) -> str:
    """``<base>,<key>=<value>...``; a key's last part unless two keys share it. ``+`` in the base becomes ``-``."""
    if not factors:
        return base
    last = [k.split(".")[-1] for k in factors]
    shown = [k.split(".")[-1] if last.count(k.split(".")[-1]) == 1 else k for k in factors]
    parts = [f"{name}={_value_text(v)}" for name, v in zip(shown, factors.values(), strict=True)]
    return ",".join([base.replace("+", "-"), *parts])


def _dataset_data(cfg: BenchConfig, ds_name: str) -> dict[str, Any]:
    ds = cfg.datasets[ds_name]
    return {k: v for k, v in ds.items() if k not in DATASET_KEYS}


def expand(cfg: BenchConfig, results: str | os.PathLike[str]) -> list[Cell]:
    """All cells, data set-major; each fit config resolved and validated (unknown keys name the cell)."""
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    checked: set[str] = set()
    results = Path(results)
    datasets, folds = expand_folds(cfg.datasets)
    cfg = dataclasses.replace(cfg, datasets=datasets)
    for ds_name, ds in cfg.datasets.items():
        if not isinstance(ds, dict) or "manifest" not in ds:
            raise ConfigError(f"datasets.{ds_name}: expected a mapping with at least 'manifest' (or 'folds')")
    if all(ds.get("eval_only") for ds in cfg.datasets.values()):
        raise ConfigError("datasets: every data set is eval_only, so there is nothing to train")
    cfg = dataclasses.replace(cfg, grid=flat_grid(cfg.grid))
    combos = grid_combinations(cfg.grid)
    for ds_name, ds in cfg.datasets.items():
        if not isinstance(ds.get("eval_only", False), bool):
            raise ConfigError(f"datasets.{ds_name}.eval_only: expected true or false, got {ds['eval_only']!r}")
        targets = _targets(cfg, ds_name, ds)
        if ds.get("eval_only"):
            continue
        for i, entry in enumerate(cfg.models):
            name, per_model = _model_entry(entry, i)
            model = deep_merge(cfg.model, per_model.get("model", {})) | {"name": name}
            if "head" in per_model.get("model", {}):
                model["head"] = per_model["model"]["head"]
            for key in cfg.grid:
                if _has_path(per_model, tuple(key.split("."))):
                    raise ConfigError(f"models[{i}] ({name}): sets {key}, which grid: varies; set it in one place")
            for combo in combos:
                factors = {key: shown for key, (_, shown) in combo.items()}
                for seed in cfg.seeds:
                    raw = {
                        "seed": seed,
                        "out_dir": "",
                        "data": deep_merge(deep_merge(cfg.data, _dataset_data(cfg, ds_name)), per_model.get("data", {}))
                        | {"name": ds_name},
                        "model": model,
                        "optim": deep_merge(cfg.optim, per_model.get("optim", {})),
                        "logger": dict(cfg.logger),
                        "eval": dict(cfg.eval),
                        "trainer": deep_merge(cfg.trainer, per_model.get("trainer", {})),
                        "compile": cfg.compile,
                        "channels_last": cfg.channels_last,
                    }
                    for key, (value, _) in combo.items():
                        raw = _set_path(raw, tuple(key.split(".")), value)
                    where = f"cell {ds_name}/{name}" + (f" ({grid_label('', factors)[1:]})" if factors else "")
                    try:
                        fit = from_dict(FitConfig, raw)
                        validate_trainer_args(fit.trainer)
                        from agebench.validate import check_label, check_tuning

                        if fit.model.label is not None:
                            check_label(f"models[{i}].label", fit.model.label)
                        check_tuning(fit)  # cheap (no torch): a bad grid value fails here, even for --list
                        if fit.model.head is not None and fit.model.cell_name not in checked:
                            _check_head(fit)
                            checked.add(fit.model.cell_name)
                    except UserError as err:
                        raise ConfigError(f"{where}/seed{seed}: {err}") from None
                    base = fit.model.cell_name
                    label = grid_label(base, factors)
                    fit.model.label = label if factors else fit.model.label
                    fit.out_dir = str(results / ds_name / label / f"seed{seed}")
                    cross = {t: _target_data(cfg, t, fit) for t in targets}
                    cell = Cell(
                        ds_name, label, seed, to_dict(fit), cfg.profile, cross, folds.get(ds_name),
                        factors=factors, variant_of=base if factors else None,
                    )  # fmt: skip
                    if cell.key in seen:
                        raise ConfigError(
                            f"models[{seen[cell.key]}] and models[{i}] both make cell {cell.key}: give one a "
                            "label (or another head), or drop it"
                        )
                    seen[cell.key] = i
                    cells.append(cell)
    return cells


def _target_data(cfg: BenchConfig, target: str, fit: FitConfig) -> dict[str, Any]:
    """The target's own data settings (manifest, root, cache, crop), read at the training cell's image size."""
    data = from_dict(DataSection, deep_merge(cfg.data, _dataset_data(cfg, target)), f"datasets.{target}")
    data.name = target
    data.img_size = fit.data.img_size
    data.eval_batch_size = fit.data.eval_batch_size or fit.data.batch_size
    return to_dict(data)


def _check_head(fit: FitConfig) -> None:
    """Unknown heads and bad head settings fail here, in one line, before any cell starts (imports torch)."""
    from agebench.validate import check_head_config

    check_head_config(fit)
