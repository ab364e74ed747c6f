"""`agebench verify`: is a received result what it claims, and was it measured on the receiver's test split?

Checks, each mismatch one line: the bundle's sha256 digests (a changed prediction is named by file and row); each
cell's metrics.json schema version; every number that predictions determine (n_test, MAE, RMSE, CS@k, CS@5, MAE
by age group; the same for each cross-dataset predictions file), recomputed from the predictions as
agebench.evaluate defines them; and, given the receiver's manifest, that each cell's predictions cover exactly its
test split with the same ages (a dropped, added or relabelled image is caught). Latency, throughput, GFLOPs and
parameter counts cannot be recomputed from files: they are carried as claimed and listed as such. Reads result
files only (no torch), like the leaderboard.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.data.manifest import load_manifest
from agebench.errors import UserError
from agebench.report.bundle import INDEX, check_bundle, is_cell_dir, read_bundle, unpack
from agebench.report.folds import pool_folds
from agebench.report.results import SCHEMA_VERSION, Predictions, as_number, find_cell_dirs, load_cell, load_predictions

# evaluate.AGE_GROUPS and metrics.DEFAULT_KS (both import torch, which this layer must not).
AGE_GROUPS = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 121)]
CS_KS = tuple(range(1, 11))
# metrics.json is computed from the very predictions file it sits beside, so honest numbers agree to rounding.
TOLERANCE = 1e-6
AGE_TOLERANCE = 1e-3  # as the leaderboard's pairing of images
CLAIMED = ("latency_ms", "throughput", "train_throughput", "gflops", "params", "peak_memory_mb")
SHOWN = 5  # examples named in a line about many images


def recompute(ages: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """metrics.json's prediction-determined numbers, as agebench.evaluate.metrics_from_predictions writes them."""
    err = np.abs(preds - ages)
    groups = {}
    for lo, hi in AGE_GROUPS:
        mask = (ages >= lo) & (ages < hi)
        if mask.any():
            groups[f"{lo}-{hi - 1}" if hi <= 120 else f"{lo}+"] = {"mae": float(err[mask].mean()), "n": int(mask.sum())}
    return {
        "n_test": int(len(ages)),
        "mae": float(err.mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "cs": {str(k): float(np.mean(err <= k)) for k in CS_KS},
        "cs5": float(np.mean(err <= 5)),
        "mae_by_age_group": groups,
    }


def _differs(claimed: Any, actual: float | int) -> bool:
    value = as_number(claimed)
    return value is None or not math.isclose(value, actual, rel_tol=0, abs_tol=TOLERANCE)


def compare_metrics(claimed: dict[str, Any], preds: Predictions, where: str, source: str) -> list[str]:
    """One line per number of ``claimed`` (a metrics.json or its cross record) the predictions do not give."""
    if not len(preds.ages):
        return [f"{source}: no rows"]
    actual = recompute(preds.ages, preds.preds)
    out = []

    def check(key: str, value: Any, fresh: float | int) -> None:
        if _differs(value, fresh):
            shown = f"{value:.6g}" if as_number(value) is not None else repr(value)
            out.append(f"{where}: {key} is {shown} but {source} gives {fresh:.6g}")

    for key in ("n_test", "mae", "rmse", "cs5"):
        if key in claimed:
            check(key, claimed[key], actual[key])
    if isinstance(claimed.get("cs"), dict):
        for k, value in claimed["cs"].items():
            if k in actual["cs"]:
                check(f"cs[{k}]", value, actual["cs"][k])
    groups = claimed.get("mae_by_age_group")
    if isinstance(groups, dict):
        for name in sorted(set(groups) | set(actual["mae_by_age_group"])):
            mine, theirs = actual["mae_by_age_group"].get(name), groups.get(name)
            if mine is None or not isinstance(theirs, dict):
                out.append(f"{where}: mae_by_age_group[{name}] is {theirs!r} but {source} gives {mine!r}")
                continue
            check(f"mae_by_age_group[{name}].n", theirs.get("n"), mine["n"])
            check(f"mae_by_age_group[{name}].mae", theirs.get("mae"), mine["mae"])
    return out


@dataclass
class Report:
    """What verify found: mismatch lines (exit 1 when any), and notes (what was checked, what is only claimed)."""

    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cells: int = 0
    digests: int = 0  # bundle files whose sha256 was checked (0: not a bundle)


def check_cell(cell_dir: Path, name: str, report: Report) -> None:
    """Schema version and every recomputable number of one cell folder."""
    where = f"{name}/metrics.json"
    try:
        metrics = json.loads((cell_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        report.mismatches.append(f"{where}: unreadable ({err})")
        return
    if not isinstance(metrics, dict):
        report.mismatches.append(f"{where}: not a JSON object")
        return
    if metrics.get("schema_version") != SCHEMA_VERSION:
        report.mismatches.append(
            f"{where}: schema_version {metrics.get('schema_version')!r}, this agebench reads {SCHEMA_VERSION}"
        )
        return
    if metrics.get("status") != "ok":
        report.notes.append(f"{name}: status {metrics.get('status')!r}: a failed run, no numbers to check")
        return
    files = {"predictions.csv": metrics}
    cross = metrics.get("cross")
    for target, rec in cross.items() if isinstance(cross, dict) else ():
        if isinstance(rec, dict):
            files[str(rec.get("predictions") or f"predictions.{target}.csv")] = rec
    for file, claimed in files.items():
        label = where if claimed is metrics else f"{where} cross[{file}]"
        try:
            preds = load_predictions(cell_dir / file)
        except FileNotFoundError:
            report.mismatches.append(f"{name}/{file}: missing, so {label} cannot be recomputed")
            continue
        except (OSError, UnicodeDecodeError, ValueError) as err:
            report.mismatches.append(f"{name}/{file}: unreadable ({err})")
            continue
        report.mismatches += compare_metrics(claimed, preds, label, f"{name}/{file}")
    claimed_only = [f"{k} {metrics[k]:g}" for k in CLAIMED if as_number(metrics.get(k)) is not None]
    if claimed_only:
        report.notes.append(f"{name}: claimed, not recomputable from files: {', '.join(claimed_only)}")
    report.cells += 1


def check_manifest(
    root: Path, dirs: list[Path], manifest: Path, data_root: Path | None, dataset: str | None, report: Report
) -> None:
    """Each cell's predictions against the receiver's test split: same images, same ages (folds pooled)."""
    cells = pool_folds([load_cell(d, root, verify=False) for d in dirs])
    datasets = sorted({c.dataset for c in cells})
    if dataset is None and len(datasets) > 1:
        raise UserError(f"the results hold data sets {', '.join(datasets)}: name the manifest's with --dataset")
    if dataset is not None and dataset not in datasets:
        raise UserError(f"--dataset {dataset}: not among the results' data sets ({', '.join(datasets)})")
    m = load_manifest(manifest, data_root, check_files=False, required_splits=("test",))
    test = {r.path: r for r in m.split("test")}
    other = {r.path: r.split for r in m.records if r.split != "test"}
    if data_root is not None:
        absent = [p for p in test if not (data_root / p).is_file()]
        if absent:
            report.mismatches.append(
                f"{manifest}: {len(absent)} test image(s) not found under {data_root} "
                f"(first: {', '.join(absent[:SHOWN])})"
            )
    for cell in cells:
        if dataset is not None and cell.dataset != dataset:
            continue
        if not cell.ok or cell.predictions is None:
            report.notes.append(f"{cell.rel}: no readable predictions to compare with {manifest}")
            continue
        p = cell.predictions
        file = cell.rel + ("/predictions.csv" if "@fold*" not in cell.rel else " (folds pooled)")
        seen: dict[str, int] = {}
        relabelled = []
        for i, (path, age) in enumerate(zip(p.paths, p.ages, strict=True)):
            if path in seen:
                report.mismatches.append(f"{file}:{i + 2}: {path} predicted twice (first at row {seen[path] + 2})")
            seen.setdefault(path, i)
            rec = test.get(path)
            if rec is not None and abs(rec.age - age) > AGE_TOLERANCE:
                relabelled.append(
                    f"{file}:{i + 2}: {path} has age {age:g} but {manifest.name} row {rec.row} says {rec.age:g}"
                )
        report.mismatches += relabelled[:20]
        if len(relabelled) > 20:
            report.mismatches.append(f"{file}: ... and {len(relabelled) - 20} more images with other ages")
        missing = [path for path in test if path not in seen]
        if missing:
            report.mismatches.append(
                f"{file}: lacks {len(missing)} of the {len(test)} test images of {manifest.name} "
                f"(first: {', '.join(missing[:SHOWN])})"
            )
        extra = [path for path in seen if path not in test]
        if extra:
            leaked = sorted({other[x] for x in extra if x in other})
            where = f"; in its {'/'.join(leaked)} split: {sum(x in other for x in extra)}" if leaked else ""
            report.mismatches.append(
                f"{file}: {len(extra)} predicted image(s) are not in {manifest.name}'s test split{where} "
                f"(first: {', '.join(extra[:SHOWN])})"
            )
        if not (missing or extra or relabelled):
            report.notes.append(f"{cell.rel}: covers exactly the {len(test)} test images of {manifest.name}, same ages")


def verify(
    target: str | Path, manifest: str | Path | None = None, root: str | Path | None = None, dataset: str | None = None
) -> Report:
    """Check a bundle (zip or unpacked), a results folder or one cell folder; see the module docstring."""
    target = Path(target)
    if manifest is not None and not Path(manifest).is_file():
        raise UserError(f"--manifest {manifest}: no such file")
    if root is not None and not Path(root).is_dir():
        raise UserError(f"--root {root}: no such folder")
    if root is not None and manifest is None:
        raise UserError("--root is the data root of --manifest; give --manifest too")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="agebench-verify-") as tmp:
        if target.is_file() or (target / INDEX).is_file():
            bundle = read_bundle(target)
            report.mismatches += check_bundle(bundle)
            report.digests = len(bundle.index["sha256"])
            base = unpack(bundle, Path(tmp)) if target.is_file() else target
            dirs = find_cell_dirs(base)
        elif is_cell_dir(target):
            base, dirs = target.parents[2], [target]
            report.notes.append(f"{target}: a cell folder, not a bundle: no digests to check")
        elif target.is_dir():
            base, dirs = target, find_cell_dirs(target)
            report.notes.append(f"{target}: a results folder, not a bundle: no digests to check")
        else:
            raise UserError(f"{target}: no such bundle or folder")
        if not dirs:
            raise UserError(f"{target}: no result cells found (expected <dataset>/<model>/seed<k>/metrics.json)")
        for d in dirs:
            check_cell(d, d.relative_to(base).as_posix(), report)
        if manifest is not None:
            check_manifest(base, dirs, Path(manifest), Path(root) if root else None, dataset, report)
    return report
