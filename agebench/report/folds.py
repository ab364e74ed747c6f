"""Cells of a fold protocol (``<name>@fold<NN>``, e.g. FG-NET leave-one-person-out) pooled into one cell per
model and seed, so the leaderboard, its intervals and its paired tests see one ``<name>`` data set.

Why pool predictions rather than average fold MAEs only: in leave-one-person-out every image is tested exactly
once, by the model whose fold held its person out, so the folds' predictions together are one prediction per
image of the whole set. The pooled MAE (total error over all images) is the figure LOPO papers report; the
unweighted mean over folds is kept beside it (``folds.fold_mean_mae``). Intervals and paired tests then
resample people across the whole set, as for any other data set. A protocol whose folds' test splits overlap
(k-fold with a shared image) is refused, since an image would count twice. :func:`load_cells` (every cell of a
results folder, folds pooled) lives here, above the single-cell reader of agebench.report.results.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import numpy as np

from agebench.errors import UserError
from agebench.report.results import Cell, Predictions, as_number, find_cell_dirs, load_cell, mean_of

FOLD_NAME = re.compile(r"^(?P<base>.+)@fold(?P<k>\d+)$")
CS_KS = tuple(range(1, 11))


def fold_of(cell: Cell) -> tuple[str, int] | None:
    match = FOLD_NAME.match(cell.dataset)
    return (match["base"], int(match["k"])) if match else None


def _concat(preds: list[Predictions]) -> Predictions:
    subjects = [p.subjects for p in preds]
    return Predictions(
        paths=tuple(x for p in preds for x in p.paths),
        ages=np.concatenate([p.ages for p in preds]),
        preds=np.concatenate([p.preds for p in preds]),
        subjects=tuple(x for s in subjects for x in s) if all(s is not None for s in subjects) else None,  # type: ignore[union-attr]
    )


def _pooled_cell(base: str, model: str, seed: int, members: list[Cell]) -> Cell:
    members = sorted(members, key=lambda c: fold_of(c)[1])  # type: ignore[index]
    first = members[0]
    rel = f"{base}@fold*/{model}/seed{seed}"
    common = {"dataset": base, "model": model, "seed": seed, "path": first.path, "rel": rel}
    n_folds = {int(c.metrics.get("fold", {}).get("n_folds") or 0) for c in members}
    expected = max(n_folds) if n_folds else 0
    bad = [c for c in members if not c.ok or c.predictions is None]
    if bad:
        c = bad[0]
        reason = c.error or "predictions.csv unreadable"
        return Cell(**common, status="failed", error=f"fold {fold_of(c)[1]} ({c.rel}): {reason}")  # type: ignore[index]
    if expected and len(members) < expected:
        done = sorted(fold_of(c)[1] for c in members)  # type: ignore[index]
        missing = sorted(set(range(expected)) - set(done))
        shown = ", ".join(str(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        return Cell(**common, status="invalid", error=f"{len(members)} of {expected} folds finished; missing {shown}")
    preds = _concat([c.predictions for c in members])  # type: ignore[misc]
    if len(set(preds.paths)) != len(preds.paths):
        return Cell(**common, status="invalid", error="the folds' test splits share images: cannot pool them")
    ttas = {str(c.metrics.get("tta", "none")) for c in members}
    if len(ttas) > 1:
        return Cell(
            **common, status="invalid", error=f"the folds ran with different eval.tta ({', '.join(sorted(ttas))})"
        )
    err = preds.abs_errors
    fold_maes = [float(c.metrics["mae"]) for c in members]
    sizes = [len(c.predictions.ages) for c in members]  # type: ignore[union-attr]
    baselines = [as_number(c.metrics.get("baseline_mae")) for c in members]
    metrics = {
        "status": "ok",
        "n_test": int(len(err)),
        "mae": float(err.mean()),
        "rmse": float(np.sqrt(((preds.preds - preds.ages) ** 2).mean())),
        "cs": {str(k): float((err <= k).mean()) for k in CS_KS},
        "cs5": float((err <= 5).mean()),
        # Weighted like the pooled MAE: each image once (LOPO folds differ in size).
        "baseline_mae": (
            sum(b * n for b, n in zip(baselines, sizes, strict=True)) / sum(sizes)  # type: ignore[operator]
            if all(b is not None for b in baselines)
            else None
        ),
        "tta": ttas.pop(),
        "params": first.metrics.get("params"),
        "latency_ms": mean_of([c.metrics.get("latency_ms") for c in members]),
        "throughput": mean_of([c.metrics.get("throughput") for c in members]),
        "train_throughput": mean_of([c.metrics.get("train_throughput") for c in members]),
        "leaky_splits": any(c.leaky for c in members),
        "subject_exclusive": all(c.subject_exclusive for c in members),
        "skipped_images": [s for c in members for s in (c.metrics.get("skipped_images") or [])],
        "profile": first.profile,
        "provenance": {k: v for k, v in first.provenance.items() if k != "manifest_sha256"},
        "folds": {
            "n_folds": len(members),
            "fold_mean_mae": statistics.fmean(fold_maes),
            "fold_sd_mae": statistics.stdev(fold_maes) if len(fold_maes) >= 2 else None,
            "cells": [c.rel for c in members],
        },
    }
    warnings = tuple(f"{c.rel}: {w}" for c in members for w in c.warnings)
    return Cell(**common, status="ok", metrics=metrics, warnings=warnings, predictions=preds)


def pool_folds(cells: list[Cell]) -> list[Cell]:
    """``cells`` with every fold protocol's cells replaced by one pooled cell per (data set, model, seed)."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    out: list[Cell] = []
    for cell in cells:
        fold = fold_of(cell)
        if fold is None:
            out.append(cell)
        else:
            groups.setdefault((fold[0], cell.model, cell.seed), []).append(cell)
    out += [_pooled_cell(base, model, seed, members) for (base, model, seed), members in groups.items()]
    return sorted(out, key=lambda c: (c.dataset, c.model, c.seed))


def load_cells(results_dir: str | Path, verify: bool = True) -> list[Cell]:
    """Every cell under ``results_dir``, the folds of a fold protocol (``<name>@fold<NN>``) pooled into one cell per
    model and seed (:func:`pool_folds`); a missing folder or one without any cell is the user's error (exit 2)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such results folder")
    dirs = find_cell_dirs(root)
    if not dirs:
        raise UserError(f"{root}: no result cells found (expected <dataset>/<model>/seed<k>/metrics.json)")
    return pool_folds([load_cell(d, root, verify=verify) for d in dirs])
