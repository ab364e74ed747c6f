"""A bench config expanded into cells: one (model, data set, seed) each, with its fully resolved fit config.

The bench YAML has top-level ``models``, ``datasets``, ``seeds``, ``trainer`` (Lightning Trainer arguments by
their own names) and, optionally, ``data`` / ``model`` / ``optim`` / ``logger`` defaults that every cell shares
(the sections of a fit config) plus ``profile`` settings. A model entry is a name or a mapping with ``name`` and
per-model sections (``model``, ``optim``, ``trainer``, ``data``) and ``head`` (short for ``model.head``); a data
set entry maps its name to ``data`` fields (at least ``manifest``). A head set for one model replaces the shared
one (head settings are never merged across levels), and names the cell ``<model>+<head>``. Every cell's config
is validated before anything runs, heads included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agebench.config import (
    ConfigError,
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


@dataclass
class Cell:
    dataset: str
    model: str
    seed: int
    fit: dict[str, Any]  # a resolved FitConfig as plain data
    profile: ProfileSection

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/seed{self.seed}"

    @property
    def config_hash(self) -> str:
        return config_hash({**self.fit, "profile": vars(self.profile)})


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
        unknown = sorted(set(extra) - {"model", "optim", "trainer", "data", "head"})
        if unknown:
            raise ConfigError(
                f"models[{index}]: unknown key(s) {', '.join(unknown)} (model, optim, trainer, data, head)"
            )
        if "head" in extra:
            extra["model"] = {**extra.get("model", {}), "head": extra.pop("head")}
        return entry["name"], extra
    raise ConfigError(f"models[{index}]: expected a name or a mapping with 'name', got {entry!r}")


def expand(cfg: BenchConfig, results: str | os.PathLike[str]) -> list[Cell]:
    """All cells, data set-major; each fit config resolved and validated (unknown keys name the cell)."""
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    checked: set[str] = set()
    results = Path(results)
    for ds_name, ds in cfg.datasets.items():
        if not isinstance(ds, dict) or "manifest" not in ds:
            raise ConfigError(f"datasets.{ds_name}: expected a mapping with at least 'manifest'")
        for i, entry in enumerate(cfg.models):
            name, per_model = _model_entry(entry, i)
            model = deep_merge(cfg.model, per_model.get("model", {})) | {"name": name}
            if "head" in per_model.get("model", {}):
                model["head"] = per_model["model"]["head"]
            for seed in cfg.seeds:
                raw = {
                    "seed": seed,
                    "out_dir": "",
                    "data": deep_merge(deep_merge(cfg.data, ds), per_model.get("data", {})) | {"name": ds_name},
                    "model": model,
                    "optim": deep_merge(cfg.optim, per_model.get("optim", {})),
                    "logger": dict(cfg.logger),
                    "eval": dict(cfg.eval),
                    "trainer": deep_merge(cfg.trainer, per_model.get("trainer", {})),
                    "compile": cfg.compile,
                    "channels_last": cfg.channels_last,
                }
                try:
                    fit = from_dict(FitConfig, raw)
                    validate_trainer_args(fit.trainer)
                    if fit.model.head is not None and fit.model.label not in checked:
                        _check_head(fit)
                        checked.add(fit.model.label)
                except UserError as err:
                    raise ConfigError(f"cell {ds_name}/{name}/seed{seed}: {err}") from None
                label = fit.model.label
                fit.out_dir = str(results / ds_name / label / f"seed{seed}")
                cell = Cell(ds_name, label, seed, to_dict(fit), cfg.profile)
                if cell.key in seen:
                    raise ConfigError(
                        f"models[{seen[cell.key]}] and models[{i}] both make cell {cell.key}: give one another "
                        "head or drop it"
                    )
                seen[cell.key] = i
                cells.append(cell)
    return cells


def _check_head(fit: FitConfig) -> None:
    """Unknown heads and bad head settings fail here, in one line, before any cell starts (imports torch)."""
    from agebench.train import check_head_config

    check_head_config(fit)
