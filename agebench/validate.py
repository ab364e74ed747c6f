"""Every value of a fit config checked before any work: one line naming the key and what it accepts.

Types are already checked when YAML becomes a :class:`~agebench.config.FitConfig`; this module checks
ranges, names and paths, and (:func:`check_input_size`) that the model can take the image size, by one
forward pass of a freshly built backbone, since only the backbone knows its own limits. It runs in ``fit``
before the output folder is made and in ``bench`` for every cell before the first one starts, so a typo
in the third model never costs the first two their training time.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agebench.atomic import check_writable_dir
from agebench.config import ConfigError, FitConfig
from agebench.data.datamodule import ON_BAD_IMAGE
from agebench.errors import UserError

# What pl.Trainer(precision=...) accepts (Lightning 2.x documentation, "precision" argument).
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "16", "32", "64", "bf16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb", "none")
# Trainer arguments that must be integers >= 1 when given.
POSITIVE_INT_TRAINER_KEYS = ("accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps", "num_nodes")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r}: {allowed}")


@contextlib.contextmanager
def _key(key: str) -> Iterator[None]:
    """Prefix a UserError raised by a registry lookup with the config key that held the name."""
    try:
        yield
    except UserError as err:
        raise ConfigError(f"{key}: {err}") from None


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, value, f"expected an integer >= {low}")


def _in_range(key: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    ok = (
        math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        _fail(
            key, value, f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )


def check_creatable_dir(key: str, path: str | os.PathLike[str]) -> None:
    """``path`` is a folder, or could be made: its nearest existing ancestor is a writable folder."""
    try:
        check_writable_dir(path, f"{key}={str(path)!r}")
    except UserError as err:
        raise ConfigError(str(err)) from None


DEVICES = "cpu, cuda, cuda:N or mps"


def check_device(device: str, name: str | None = None) -> str:
    """A torch device string that works on this machine, checked before anything is loaded onto it.

    Refused, as UserError ``"<name>: <why>"`` (default name ``--device DEVICE``): text torch cannot parse, a
    device type other than cpu, cuda or mps, cuda where torch sees no CUDA device (no GPU, no driver, a CPU
    build), cuda:N beyond the devices present, mps where it is not available. Returns ``device`` unchanged.
    """
    import torch

    name = f"--device {device}" if name is None else name
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{name}: not a device; expected {DEVICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{name}: no CUDA device is available (torch {torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{name}: only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"{name}: MPS (Apple GPU) is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise UserError(f"{name}: device type {dev.type!r} is not supported; expected {DEVICES}")
    return device


def check_devices(value: Any, key: str = "trainer.devices") -> None:
    """'auto', a count >= 1 (or -1: all), a list of device indices, or such a count/list as text."""
    if value == "auto" or value == -1:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip(",").split(",")]
        if all(p.isdigit() for p in parts) and (len(parts) > 1 or int(parts[0]) >= 1 or value.endswith(",")):
            return
    _fail(key, value, "expected 'auto', a device count >= 1, -1 (all), or a list of device indices such as [0, 1]")


def check_trainer(trainer: dict[str, Any]) -> None:
    """Ranges of the Trainer arguments agebench relies on (names are checked by the config loader)."""
    import torch

    precision = trainer.get("precision", "32-true")
    if str(precision) not in PRECISIONS:
        _fail("trainer.precision", precision, f"expected one of {', '.join(PRECISIONS)}")
    accelerator = trainer.get("accelerator", "auto")
    if not isinstance(accelerator, str) or accelerator not in ACCELERATORS:
        _fail("trainer.accelerator", accelerator, f"expected one of {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        _fail("trainer.accelerator", accelerator, "no CUDA device is visible here (use cpu or auto)")
    check_devices(trainer.get("devices", 1))
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs is not None:
        _int_at_least("trainer.max_epochs", max_epochs, 1)
    if max_steps != -1:
        _int_at_least("trainer.max_steps", max_steps, 1)
    if max_epochs is None and max_steps == -1:
        _fail("trainer.max_epochs", None, "set max_epochs (or max_steps): the LR schedule needs a finite length")
    for key in POSITIVE_INT_TRAINER_KEYS:
        if key in trainer:
            _int_at_least(f"trainer.{key}", trainer[key], 1)
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip >= 0):
        _fail("trainer.gradient_clip_val", clip, "expected a number >= 0 (or null)")


def check_fit_config(cfg: FitConfig) -> None:
    """Everything that can be checked without building the model; raises :class:`ConfigError`."""
    from agebench.models.losses import build_loss
    from agebench.models.registry import get_backbone_spec

    if not 0 <= cfg.seed < 2**32:
        _fail("seed", cfg.seed, "expected an integer in [0, 2**32)")
    d, m, o = cfg.data, cfg.model, cfg.optim
    if not Path(d.manifest).is_file():
        _fail("data.manifest", d.manifest, "file not found (`agebench synth` or `agebench prepare` makes one)")
    if d.root is not None and not Path(d.root).is_dir():
        _fail("data.root", d.root, "folder not found")
    _int_at_least("data.img_size", d.img_size, 1)
    _int_at_least("data.batch_size", d.batch_size, 1)
    if d.eval_batch_size is not None:
        _int_at_least("data.eval_batch_size", d.eval_batch_size, 1)
    _int_at_least("data.num_workers", d.num_workers, 0)
    _in_range("data.crop_pct", d.crop_pct, 0, 1, low_open=True)
    if d.on_bad_image not in ON_BAD_IMAGE:
        _fail("data.on_bad_image", d.on_bad_image, f"expected one of {', '.join(ON_BAD_IMAGE)}")
    from agebench.evaluate import TTA

    if cfg.eval.tta not in TTA:
        _fail("eval.tta", cfg.eval.tta, f"expected one of {', '.join(TTA)}")
    _in_range("data.augment.scale_min", d.augment.scale_min, 0, 1, low_open=True)
    _in_range("data.augment.hflip", d.augment.hflip, 0, 1)
    _in_range("data.augment.color_jitter", d.augment.color_jitter, 0, 1)

    with _key("model.name"):
        spec = get_backbone_spec(m.name)
    if spec.requires_pretrained_path and m.pretrained_path is None:
        _fail(
            "model.pretrained_path", None, f"model {m.name!r} needs its weights file ({spec.requires_pretrained_path})"
        )
    _int_at_least("model.head_hidden", m.head_hidden, 0)
    _in_range("model.head_dropout", m.head_dropout, 0, 1, high_open=True)
    if m.pretrained_path is not None and not Path(m.pretrained_path).is_file():
        _fail("model.pretrained_path", m.pretrained_path, "file not found")
    if m.weights_dir is not None and not Path(m.weights_dir).is_dir():
        _fail("model.weights_dir", m.weights_dir, "folder not found (`agebench weights fetch MODEL --to DIR`)")

    check_tuning(cfg)

    if not (math.isfinite(o.lr) and o.lr > 0):
        _fail("optim.lr", o.lr, "expected a finite number > 0")
    if not (math.isfinite(o.weight_decay) and o.weight_decay >= 0):
        _fail("optim.weight_decay", o.weight_decay, "expected a finite number >= 0")
    for i, beta in enumerate(o.betas):
        _in_range(f"optim.betas[{i}]", beta, 0, 1, high_open=True)
    _in_range("optim.warmup_frac", o.warmup_frac, 0, 1)
    _in_range("optim.min_lr_ratio", o.min_lr_ratio, 0, 1)
    with _key("optim.loss"):
        build_loss(o.loss, **o.loss_kwargs)

    with _key("model.head"):
        check_head_config(cfg)

    if cfg.logger.kind not in LOGGERS:
        _fail("logger.kind", cfg.logger.kind, f"expected one of {', '.join(LOGGERS)}")
    check_trainer(cfg.trainer)
    check_creatable_dir("out_dir", cfg.out_dir)


FREEZE = ("none", "backbone")
FOLD_SEPARATOR = "@fold"  # the bench's fold cells are <data set>@foldNN: a label must not look like one


def check_tuning(cfg: FitConfig) -> None:
    """The fine-tuning regime's keys, alone and together (the blocks they need are checked on the built model)."""
    m, o = cfg.model, cfg.optim
    if m.freeze not in FREEZE:
        _fail("model.freeze", m.freeze, f"expected one of {', '.join(FREEZE)}")
    if m.label is not None:
        check_label("model.label", m.label)
    if m.train_last_blocks is not None:
        _int_at_least("model.train_last_blocks", m.train_last_blocks, 1)
        if m.freeze == "backbone":
            _fail("model.train_last_blocks", m.train_last_blocks, "conflicts with model.freeze=backbone (set one)")
    if o.layer_decay is not None:
        _in_range("optim.layer_decay", o.layer_decay, 0, 1, low_open=True)
        if m.freeze == "backbone":
            _fail("optim.layer_decay", o.layer_decay, "has nothing to decay with model.freeze=backbone (set null)")
    if not (math.isfinite(o.backbone_lr_mult) and o.backbone_lr_mult > 0):
        _fail("optim.backbone_lr_mult", o.backbone_lr_mult, "expected a finite number > 0")


def check_label(key: str, label: Any) -> None:
    """A cell name becomes a results folder: non-empty, no path separator, no leading dot, no '@fold'."""
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        _fail(key, label, "expected a non-empty name without surrounding spaces")
    if "/" in label or "\\" in label or label.startswith(".") or FOLD_SEPARATOR in label:
        _fail(key, label, f"a cell name is a folder name: no '/', no leading '.', no {FOLD_SEPARATOR!r}")


def check_blocks(cfg: FitConfig, backbone: Any) -> None:
    """``model.train_last_blocks`` and ``optim.layer_decay`` need the backbone's block declaration."""
    from agebench.models.registry import backbone_blocks

    m, o = cfg.model, cfg.optim
    wanted = [k for k, v in (("model.train_last_blocks", m.train_last_blocks), ("optim.layer_decay", o.layer_decay))
              if v is not None]  # fmt: skip
    if not wanted or backbone is None:
        return
    layout = backbone_blocks(backbone)
    if layout is None:
        raise ConfigError(
            f"{' and '.join(wanted)}: backbone {m.name!r} declares no blocks (the optional blocks() of the backbone "
            "contract), so it can train with model.freeze none or backbone only"
        )
    if m.train_last_blocks is not None and m.train_last_blocks > len(layout.blocks):
        _fail("model.train_last_blocks", m.train_last_blocks, f"backbone {m.name!r} has {len(layout.blocks)} blocks")


def head_settings(cfg: FitConfig, train_ages: np.ndarray | None = None) -> tuple[dict[str, Any], list[int] | None]:
    """The head as built: ``{"name", **resolved kwargs}`` (config keys, then context values the factory names),
    and the age range (``model.age_range``, else the training split's floor/ceil; None before data is read)."""
    from agebench.models.heads import DEFAULT_HEAD, age_range_of, head_context, resolve_head_kwargs

    m, o = cfg.model, cfg.optim
    standardize = o.standardize_targets and train_ages is not None
    context = head_context(
        hidden=m.head_hidden,
        dropout=m.head_dropout,
        loss=o.loss,
        loss_kwargs=o.loss_kwargs,
        age_mean=float(train_ages.mean()) if standardize else 0.0,
        age_std=float(train_ages.std() or 1.0) if standardize else 1.0,
    )
    name = m.head_name or DEFAULT_HEAD
    kwargs = resolve_head_kwargs(name, m.head_kwargs, context)
    if m.age_range is not None:
        age_range = list(m.age_range)
    else:
        age_range = list(age_range_of(train_ages)) if train_ages is not None and len(train_ages) else None
    return {"name": name, **kwargs}, age_range


def hashed_config(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (plain data) as :func:`~agebench.config.config_hash` must see it: a set ``model.head``
    becomes every setting the head runs with, its signature's defaults included, so that a changed default
    changes the hash of the cells that relied on it and they are trained again. Settings the head takes from
    elsewhere in the config (``hidden`` from ``model.head_hidden``...) are hashed there, unless ``model.head``
    sets them itself. Without a head the config is returned as it is: its hash is the one it always had."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("head") is None:
        return data
    from agebench.models.heads import resolve_head_kwargs
    from agebench.models.heads.registry import CONTEXT_SOURCES

    head = model["head"] if isinstance(model["head"], dict) else {"name": model["head"]}
    name, given = head["name"], {k: v for k, v in head.items() if k != "name"}
    resolved = resolve_head_kwargs(name, given, {})
    settings = {k: v for k, v in resolved.items() if k in given or k not in CONTEXT_SOURCES}
    return {**data, "model": {**model, "head": {"name": name, **settings}}}


def check_head_config(cfg: FitConfig) -> None:
    """Fail before any data is read when the head is unknown or its settings are bad (one-line UserError)."""
    from agebench.models.heads import check_head

    head, age_range = head_settings(cfg)
    check_head(head.pop("name"), head, age_range, {})


def _fits(name: str, img_size: int, kwargs: dict[str, Any], backbone: Any = None) -> str | None:
    """None when backbone ``name`` built for ``img_size`` takes a batch of that size, else the error's line."""
    import torch

    from agebench.models.registry import create_backbone

    try:
        if backbone is None:
            backbone = create_backbone(name, img_size=img_size, **kwargs)
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, img_size, img_size, device=next(backbone.parameters()).device))
        backbone.train(was_training)
    except UserError:
        raise
    except (RuntimeError, ValueError, AssertionError, TypeError) as err:
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return None


def check_input_size(name: str, img_size: int, kwargs: dict[str, Any] | None = None, backbone: Any = None) -> None:
    """Run one image of ``img_size`` through ``backbone`` (default: ``name`` built without weights).

    On failure, say the smallest of a few common sizes above ``img_size`` that works, so the message can
    tell the user what to set.
    """
    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "pretrained"}
    error = _fits(name, img_size, kwargs, backbone)
    if error is None:
        return
    larger = [s for s in (8, 16, 24, 32, 48, 64, 96, 128, 160, 224, 256, 384) if s > img_size]
    needed = next((s for s in larger if _fits(name, s, kwargs) is None), None)
    hint = f"it needs at least {needed} px" if needed else "no common size up to 384 px works either"
    _fail("data.img_size", img_size, f"model {name!r} cannot take {img_size} px images ({error}); {hint}")


def regime_warning(name: str, img_size: int, backbone: Any) -> str | None:
    """One line when ``backbone`` at ``img_size`` has its defining mechanism switched off (see ``Regime``)."""
    from agebench.models.registry import backbone_regime

    regime = backbone_regime(backbone, img_size)
    reason = regime.degenerate if regime is not None else None
    if reason is None:
        return None
    return (
        f"agebench: warning: model {name!r} at {img_size} px is degenerate ({reason}): its defining mechanism is "
        "off, so this run does not measure the architecture; use larger images or a finer grid"
    )


def _built(name: str, img_size: int, kwargs: dict[str, Any]) -> Any:
    """The backbone without weights, or None where building fails (check_input_size then says why)."""
    from agebench.models.registry import create_backbone

    try:
        return create_backbone(name, img_size=img_size, **{k: v for k, v in kwargs.items() if k != "pretrained"})
    except UserError:
        raise
    except (RuntimeError, ValueError, AssertionError, TypeError):
        return None


def validate_fit_config(cfg: FitConfig, *, probe_model: bool = True) -> None:
    """:func:`check_fit_config`, then (``probe_model``) :func:`check_input_size` for its model, and a one-line
    warning when the model is degenerate at that size."""
    check_fit_config(cfg)
    if probe_model:
        backbone = _built(cfg.model.name, cfg.data.img_size, cfg.model.kwargs)
        check_input_size(cfg.model.name, cfg.data.img_size, cfg.model.kwargs, backbone=backbone)
        check_blocks(cfg, backbone)
        warning = regime_warning(cfg.model.name, cfg.data.img_size, backbone)
        if warning:
            print(warning, flush=True)
        if cfg.model.pretrained:
            from agebench.models.fetch import ensure_available

            kwargs = {"img_size": cfg.data.img_size, **cfg.model.kwargs}
            ensure_available(cfg.model.name, cfg.model.weights_dir, **kwargs)
