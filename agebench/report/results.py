"""Result cells read back from disk: ``RESULTS/<dataset>/<model>/seed<k>/metrics.json`` (+ ``predictions.csv``).

This module reads files only (json, csv): the leaderboard must work on a laptop that has the results but not
torch, and it must never reach back into training code. A cell that cannot be read is kept as an ``invalid``
cell with a one-line reason, so a broken run shows up in the table instead of silently disappearing.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agebench.hashing import split_sha256

SCHEMA_VERSION = 1
_SEED_DIR = re.compile(r"^seed(\d+)$")
# |MAE(metrics.json) - MAE(predictions.csv)| above this means the two files do not describe the same run.
# predictions.csv keeps 6 decimals, so honest files agree far closer than this.
MAE_TOLERANCE = 1e-3
_CORE_COLUMNS = ("path", "age", "pred", "subject_id")


@dataclass(frozen=True)
class Predictions:
    """A predictions.csv in memory: one entry per test image, in file order.

    ``subjects`` holds the optional ``subject_id`` column (written since agebench 0.2 where the manifest has
    identities); None when the column is absent, so statistics fall back to resampling images. ``columns`` holds
    every other column the file has beyond ``path, age, pred, subject_id`` (e.g. the manifest's demographic
    columns), as strings in file order.
    """

    paths: tuple[str, ...]
    ages: np.ndarray
    preds: np.ndarray
    subjects: tuple[str, ...] | None = None
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def abs_errors(self) -> np.ndarray:
        return np.abs(self.preds - self.ages)

    @property
    def has_subjects(self) -> bool:
        return self.subjects is not None and any(self.subjects)

    @property
    def split_key(self) -> str:
        """sha256 of the test split's content: the sorted (path, age to 1e-3) pairs, nothing else.

        Two cells can be paired or pooled exactly when their keys are equal. It ignores the manifest file's bytes,
        so adding a column to a manifest (or receiving the same split from another lab) keeps cells comparable.
        """
        return split_sha256(zip(self.paths, self.ages.tolist(), strict=True))


@dataclass(frozen=True)
class Cell:
    """One (data set, model, seed) run as found on disk; ``metrics`` is metrics.json as written."""

    dataset: str
    model: str
    seed: int
    path: Path
    rel: str  # folder relative to the results root, posix: stable across machines, used as the cell's id
    status: str  # "ok" | "failed" (the run says so) | "invalid" (files missing or unreadable)
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    predictions: Predictions | None = field(default=None, repr=False, compare=False)
    # Set when a leaderboard merges several sources (agebench.report.sources): the folder's or bundle's label,
    # the bundle file the cell came from, and, for a test split other than its data set's reference split, the
    # comparison table it goes to and why it is not pooled with the others.
    origin: str = ""
    bundle: str | None = None
    split_table: str | None = None
    split_note: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def family(self) -> str:
        """``convnext-atto`` -> ``convnext``: model names are opaque apart from this prefix."""
        return self.model.split("-", 1)[0]

    def number(self, key: str) -> float | None:
        """A finite metric, or None: failed cells and absent keys never yield a number."""
        if not self.ok:
            return None
        return as_number(self.metrics.get(key))

    @property
    def leaky(self) -> bool:
        return bool(self.metrics.get("leaky_splits", False))

    @property
    def subject_exclusive(self) -> bool:
        return bool(self.metrics.get("subject_exclusive", True))

    @property
    def regime(self) -> dict[str, Any] | None:
        """The backbone's declared regime (metrics.json ``regime``, agebench 0.5); None: unknown."""
        reg = self.metrics.get("regime")
        return reg if isinstance(reg, dict) else None

    @property
    def regime_text(self) -> str:
        """``16 tokens (4x4)`` for attention, ``grid 2x2`` for a CNN's last map, ``unknown`` undeclared."""
        reg = self.regime
        grid = reg.get("grid") if reg else None
        if not reg or not isinstance(grid, list) or len(grid) != 2:
            return "unknown"
        if reg.get("mechanism") == "attention":
            return f"{reg.get('tokens')} tokens ({grid[0]}x{grid[1]})"
        return f"grid {grid[0]}x{grid[1]}"

    @property
    def degenerate(self) -> str | None:
        reg = self.regime
        return str(reg["degenerate"]) if reg and reg.get("degenerate") else None

    @property
    def provenance(self) -> dict[str, Any]:
        prov = self.metrics.get("provenance")
        return prov if isinstance(prov, dict) else {}

    @property
    def profile(self) -> dict[str, Any]:
        prof = self.metrics.get("profile")
        return prof if isinstance(prof, dict) else {}

    @property
    def device(self) -> str | None:
        """Device and precision the timings ran at, e.g. ``cpu (x86_64, 2 threads), 32-true``."""
        if not self.ok:
            return None
        prov, prof = self.provenance, self.profile
        parts = [str(prov.get("device") or prof.get("device") or "").strip()]
        precision = prof.get("precision") or prov.get("precision")
        if precision:
            parts.append(str(precision))
        text = ", ".join(p for p in parts if p)
        return text or None

    @property
    def timed_on(self) -> str | None:
        """Where the timings come from: device, precision and the throughput batch, in one phrase."""
        device = self.device
        batch = self.profile.get("batch_size") if self.ok else None
        if batch:
            return f"{device or 'device not recorded'}, batch {batch}"
        return device

    def attention(self) -> list[dict[str, Any]]:
        """Grad-CAM attention shares written by `agebench explain` (explain/attention.json), if any."""
        path = self.path / "explain" / "attention.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return [e for e in entries if isinstance(e, dict) and "share" in e and "uniform_baseline" in e]

    def report_links(self) -> list[tuple[str, Path]]:
        """Artifacts made by later tools (``agebench explain``) that a reader may want to open."""
        links = []
        if (self.path / "failure_report.md").is_file():
            links.append(("failure report", self.path / "failure_report.md"))
        if (self.path / "explain").is_dir():
            links.append(("explain", self.path / "explain"))
        return links


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def mean_of(values: list[Any]) -> float | None:
    """Mean of the finite numbers among ``values`` (missing or non-numeric entries skipped); None if there are none."""
    numbers = [v for v in (as_number(x) for x in values) if v is not None]
    return math.fsum(numbers) / len(numbers) if numbers else None  # as statistics.fmean


def load_predictions(path: str | Path) -> Predictions:
    """A predictions.csv (columns path, age, pred, optional subject_id); torch-free twin of evaluate's reader."""
    paths, ages, preds, subjects = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        extra_names = [c for c in reader.fieldnames or [] if c not in _CORE_COLUMNS]
        extra: dict[str, list[str]] = {c: [] for c in extra_names}
        missing = {"path", "age", "pred"} - columns
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                age, pred = float(row["age"]), float(row["pred"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line}: not a number ({err})") from None
            if not (math.isfinite(age) and math.isfinite(pred)):
                raise ValueError(f"{path}:{line}: age and pred must be finite, got {row['age']!r}, {row['pred']!r}")
            ages.append(age)
            preds.append(pred)
            paths.append(row["path"])
            subjects.append(row.get("subject_id") or "")
            for c in extra_names:
                extra[c].append(row.get(c) or "")
    return Predictions(
        paths=tuple(paths),
        ages=np.array(ages, dtype=np.float64),
        preds=np.array(preds, dtype=np.float64),
        subjects=tuple(subjects) if "subject_id" in columns else None,
        columns={c: tuple(v) for c, v in extra.items()},
    )


def check_predictions(metrics: dict[str, Any], predictions: Predictions) -> list[str]:
    """Warnings where predictions.csv and metrics.json disagree: the numbers must be recomputable from the file."""
    out = []
    n_test = metrics.get("n_test")
    if isinstance(n_test, int) and n_test != len(predictions.ages):
        out.append(f"predictions.csv has {len(predictions.ages)} rows but n_test is {n_test}")
    mae = as_number(metrics.get("mae"))
    if len(predictions.ages) and mae is not None:
        recomputed = float(predictions.abs_errors.mean())
        if abs(recomputed - mae) > MAE_TOLERANCE:
            out.append(f"MAE from predictions.csv is {recomputed:.4f} but metrics.json says {mae:.4f}")
    return out


def load_cell(path: Path, root: Path, verify: bool = True) -> Cell:
    """One cell folder; problems become an ``invalid`` cell (shown in the table), never an exception."""
    dataset, model, seed_dir = path.parts[-3:]
    seed = int(_SEED_DIR.match(seed_dir).group(1))  # type: ignore[union-attr]  # callers pass matching folders
    base = {"dataset": dataset, "model": model, "seed": seed, "path": path, "rel": path.relative_to(root).as_posix()}
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return Cell(**base, status="invalid", error="no metrics.json (run crashed or still running)")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return Cell(**base, status="invalid", error=f"metrics.json unreadable: {err}")
    if not isinstance(metrics, dict):
        return Cell(**base, status="invalid", error="metrics.json is not a JSON object")
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        return Cell(**base, status="invalid", error=f"metrics.json schema_version {version!r}, expected 1")
    status = metrics.get("status")
    if status == "failed":
        error = " ".join(str(metrics.get("error") or "no error message").split())
        return Cell(**base, status="failed", error=error, metrics=metrics)
    if status != "ok":
        return Cell(**base, status="invalid", error=f"metrics.json status {status!r}, expected 'ok' or 'failed'")
    if as_number(metrics.get("mae")) is None:
        return Cell(**base, status="invalid", error="metrics.json has status ok but no numeric mae", metrics=metrics)
    warnings = []
    for key, expected in (("dataset", dataset), ("model", model), ("seed", seed)):
        if key in metrics and metrics[key] != expected:
            warnings.append(f"metrics.json says {key} {metrics[key]!r} but the folder says {expected!r}")
    # Read once: the check below and the leaderboard's statistics (intervals, paired tests) both need it.
    predictions, problem = None, None
    if not (path / "predictions.csv").is_file():
        problem = "predictions.csv missing: the MAE cannot be recomputed"
    else:
        try:
            predictions = load_predictions(path / "predictions.csv")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problem = f"predictions.csv unreadable: {err}"
    if verify:
        warnings.extend([problem] if problem else check_predictions(metrics, predictions))
    return Cell(**base, status="ok", metrics=metrics, warnings=tuple(warnings), predictions=predictions)


def find_cell_dirs(root: Path) -> list[Path]:
    """Folders ``<dataset>/<model>/seed<k>`` under ``root``, in a stable order (data set, model, seed number)."""
    found = [p for p in root.glob("*/*/seed*") if p.is_dir() and _SEED_DIR.match(p.name)]
    return sorted(found, key=lambda p: (p.parts[-3], p.parts[-2], int(p.name[4:])))


def provenance_summary(cells: list[Cell]) -> dict[str, list[str]]:
    """Distinct versions, commits and devices over all cells: what a reader needs to judge comparability."""
    keys = [
        "agebench_version",
        "agebench_commit",
        "torch",
        "pytorch_lightning",
        "timm",
        "python",
        "device",
        "precision",
        "manifest_sha256",
    ]
    out: dict[str, list[str]] = {}
    for key in keys:
        values = sorted({str(c.provenance[key]) for c in cells if c.provenance.get(key) not in (None, "")})
        if values:
            out[key] = values
    stamps = sorted(str(c.provenance["timestamp"]) for c in cells if c.provenance.get("timestamp"))
    if stamps:
        out["runs between"] = [stamps[0], stamps[-1]] if stamps[0] != stamps[-1] else [stamps[0]]
    return out
