"""A trained run loaded back: a result cell's checkpoint and config, the network rebuilt from the checkpoint alone.

Used by the bench (a finished cell that predicts a new cross-dataset target), predict, export and explain, so it
sits below all of them; it knows models and files, nothing of reporting.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

from agebench.errors import UserError


def load_regressor(ckpt: Path):
    """An AgeRegressor rebuilt from a checkpoint's own hyper-parameters (no pretrained download), in eval mode."""
    from agebench.models import AgeRegressor

    if not ckpt.is_file():
        raise UserError(f"{ckpt}: checkpoint not found")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{ckpt}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    hp = dict(state.get("hyper_parameters") or {})
    if "model_config" not in hp or "state_dict" not in state:
        raise UserError(f"{ckpt}: not an agebench checkpoint (no model_config in its hyper-parameters)")
    model = _rebuilt(AgeRegressor, hp)
    model.load_state_dict(state["state_dict"])
    return model.eval()


def _rebuilt(cls, hp: dict[str, Any]):
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in hp.items() if k in accepted and k not in ("backbone", "head")})


def untrained_like(model, seed: int = 0):
    """``model``'s architecture and head at a fresh initialisation (``seed``; no pretrained weights), in eval mode.

    The control of the model-parameter randomisation test (Adebayo et al., NeurIPS 2018, "Sanity Checks for
    Saliency Maps"): an attribution that looks the same on the untrained network shows the architecture or the
    image, not what training learned. The head keeps the run's age normalisation, so it predicts plausible ages.
    """
    from agebench.models import AgeRegressor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _rebuilt(AgeRegressor, dict(model.hparams)).eval()


def run_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """A result cell's best (else last) checkpoint and the ``data`` section of its config.yaml."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: result folder not found")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: no config.yaml, so not a result folder of `agebench fit` or `agebench bench`")
    data = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("data") or {}
    ckpt = next((p for p in (run_dir / "checkpoints" / n for n in ("best.ckpt", "last.ckpt")) if p.is_file()), None)
    if ckpt is None:
        raise UserError(f"{run_dir}: no checkpoints/best.ckpt or last.ckpt")
    return ckpt, data
