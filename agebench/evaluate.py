"""Test-set evaluation on exactly the test set: one process, every image once, metrics from the predictions.

Why not ``trainer.test`` under DDP: a DistributedSampler pads the last shard by repeating images, so metrics
computed that way are not the test set's. Here one process walks the test split in order, and the metrics are
computed from the written predictions, so anyone can recompute them from predictions.csv.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from agebench.atomic import atomic_open
from agebench.data.manifest import Manifest, Record
from agebench.metrics import regression_metrics

AGE_GROUPS = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 121)]


def autocast_for(precision: str | int | None, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context that matches a Lightning precision string (mixed precision only)."""
    text = str(precision or "32-true")
    if text in ("bf16-mixed", "bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if text in ("16-mixed", "16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _plain(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    return model(images)


def _flip(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The mean of the image's prediction and its mirror's: faces are near-symmetric, their errors less so."""
    return 0.5 * (model(images).float() + model(torch.flip(images, dims=[-1])).float())


# eval.tta / `agebench predict --tta`: name -> (model, images [B, 3, H, W]) -> ages [B].
TTA: dict[str, Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]] = {
    "none": _plain,
    "flip": _flip,
}


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader, device: torch.device, precision: str | int | None = None, tta: str = "none"
) -> dict:
    """Ages for every item of ``loader``: returns arrays index, age, pred and the list of paths, in loader order."""
    model.eval().to(device)
    forward = TTA[tta]
    idx, ages, preds, paths = [], [], [], []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        with autocast_for(precision, device):
            out = forward(model, images)
        preds.append(out.float().reshape(-1).cpu())
        ages.append(batch["age"].float())
        idx.append(torch.as_tensor(batch["index"]))
        paths.extend(batch["path"])
    return {
        "index": torch.cat(idx).numpy(),
        "age": torch.cat(ages).numpy().astype(np.float64),
        "pred": torch.cat(preds).numpy().astype(np.float64),
        "path": paths,
    }


def mae_by_age_group(age: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    """MAE per decade of true age (the last group is 70+): where do models fail, and on how many images."""
    out = {}
    err = np.abs(pred - age)
    for lo, hi in AGE_GROUPS:
        mask = (age >= lo) & (age < hi)
        if mask.any():
            name = f"{lo}-{hi - 1}" if hi <= 120 else f"{lo}+"
            out[name] = {"mae": float(err[mask].mean()), "n": int(mask.sum())}
    return out


def metrics_from_predictions(age: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The headline numbers of a result cell: mae, rmse, cs (k -> share), cs5, mae_by_age_group, n_test."""
    m = regression_metrics(age, pred)
    return {
        "n_test": int(len(age)),
        "mae": m["mae"],
        "rmse": m["rmse"],
        "cs": {str(k): v for k, v in m["cs"].items()},
        "cs5": m["cs"][5],
        "mae_by_age_group": mae_by_age_group(age, pred),
    }


def attach_records(pred: dict, manifest: Manifest, records: Sequence[Record]) -> dict:
    """Add the test images' subject_id (where the manifest has identities) and demographic columns to ``pred``.

    ``records`` are the dataset's records that ``pred["index"]`` points into. The columns travel into
    predictions.csv so the report layer (group accuracy, age assurance) needs result files only.
    """
    chosen = [records[int(i)] for i in pred["index"]]
    if manifest.has_identities:
        pred["subject_id"] = [r.subject_id for r in chosen]
    columns = manifest.demographic_columns
    if columns:
        pred["columns"] = {c: [r.extra.get(c, "") for r in chosen] for c in columns}
    return pred


def write_predictions(path: str | os.PathLike[str], pred: dict) -> None:
    """predictions.csv: path, age, pred (+ subject_id where ``pred`` has one, + the manifest's demographic
    columns under ``pred["columns"]``); one row per test image, in order.

    subject_id lets the leaderboard resample people rather than images (a cluster bootstrap): a person's
    photos share errors, so treating them as independent makes intervals too narrow.
    """
    subjects = pred.get("subject_id")
    extra: dict[str, list[str]] = pred.get("columns") or {}
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "age", "pred"] + (["subject_id"] if subjects is not None else []) + list(extra))
        for i, (p, a, y) in enumerate(zip(pred["path"], pred["age"], pred["pred"], strict=True)):
            row = [p, f"{a:.4f}".rstrip("0").rstrip("."), f"{y:.6f}"]
            row += [subjects[i]] if subjects is not None else []
            writer.writerow(row + [values[i] for values in extra.values()])


def read_predictions(path: str | os.PathLike[str]) -> Iterator[tuple[str, float, float]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            yield row["path"], float(row["age"]), float(row["pred"])
