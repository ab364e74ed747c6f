"""Result cells aggregated over seeds into leaderboard rows, written as CSV here (Markdown and JSON, which carry
the statistics too, in agebench.report.tables).

Rows are deterministic functions of the result files (no clock, no absolute paths), so diffing two leaderboards
shows only what changed in the results. Seeds are only averaged when they share the same flags: a leaky seed
never lends its MAE to a clean one, and a failed cell is its own row that carries an error, never a number.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agebench.report.reference import SOURCE, references_for
from agebench.report.results import Cell

# 2: rows gain rank, group and CI bounds; the document gains "statistics" (pairs, groups, Friedman).
FORMAT_VERSION = 2
MEASURED = "measured"
FLAG_LEAKY = "leaky"
FLAG_NOT_EXCLUSIVE = "not subject-exclusive"
FLAG_UNVERIFIED = "unverified"
FLAG_SKIPPED = "skipped images"
FLAG_CROSS_OVERLAP = "cross-eval overlap"
FLAG_FOLDS = "folds pooled"
FLAG_TTA = "tta flip"
FLAG_DEGENERATE = "degenerate"
FLAG_OTHER_SPLIT = "other test split"
FLAG_HELP = {
    FLAG_OTHER_SPLIT: "a merged leaderboard's cell whose test split (its predictions' paths and ages) is not its data "
    "set's reference split, the first source's: ranked and paired only within its own table, never with the others",
    FLAG_DEGENERATE: "the model's defining mechanism is off at this image size (attention over < 4 tokens, or a "
    "CNN whose last map is 1x1; column *regime*): the row does not measure the architecture it names",
    FLAG_TTA: "test predictions average each image and its mirror (eval.tta=flip): not comparable to single-view rows",
    FLAG_FOLDS: "a fold protocol (e.g. FG-NET leave-one-person-out): every image predicted once, by the model whose "
    "fold held it out; MAE over all images (the unweighted mean over folds is folds.fold_mean_mae in the JSON)",
    FLAG_CROSS_OVERLAP: "a cross-dataset test set shares images or people with this training set: that matrix "
    "entry is optimistic (marked in the cross-dataset matrix)",
    FLAG_SKIPPED: "images that could not be decoded were left out (data.on_bad_image=skip; metrics.json lists them)",
    FLAG_LEAKY: "the splits share subjects or images (audit failed): the MAE is optimistic and not comparable",
    FLAG_NOT_EXCLUSIVE: "the data set has no identities (e.g. UTKFace), so the same person may be in train and test",
    FLAG_UNVERIFIED: "predictions.csv is missing or disagrees with metrics.json (see the warnings)",
}
# (row key, header) of the human tables (Markdown, terminal, HTML); display() gives their text.
DISPLAY_COLUMNS = [
    ("dataset", "data set"),
    ("rank", "rank"),
    ("group", "group"),
    ("model", "model"),
    ("source", "source"),
    ("seeds", "seeds"),
    ("mae", "MAE (years)"),
    ("mae_ci", "MAE CI"),
    ("cs5", "CS@5"),
    ("baseline", "mean-predictor MAE"),
    ("params", "params (M)"),
    ("latency", "latency (ms, batch 1)"),
    ("throughput", "throughput (img/s)"),
    ("timed_on", "timed on"),
    ("regime", "regime"),
    ("flags", "flags"),
]


@dataclass(frozen=True)
class RowInterval:
    """A row's MAE and CS@k intervals, pooled over its seeds."""

    mae: tuple[float, float]
    cs: dict[int, tuple[float, float]]
    unit: str  # "subjects" | "images": what was resampled within a seed
    n_units: int  # units in one seed's test split (the largest, if seeds differ)
    level: float


@dataclass
class Row:
    """One leaderboard line: seeds of a (data set, model) pooled, a failure, or a published reference."""

    dataset: str
    model: str
    source: str = MEASURED
    origin: str = ""  # results folder or bundle the row came from, in a merged leaderboard; "" with one source
    table: str = ""  # comparison table when not the data set's (a merged cell on another test split)
    status: str = "ok"  # "ok" | "failed" | "invalid" | "reference"
    cells: tuple[Cell, ...] = ()
    mae_mean: float | None = None
    mae_std: float | None = None  # sample std (ddof=1); None with one seed
    cs5_mean: float | None = None
    rmse_mean: float | None = None
    baseline_mae: float | None = None
    n_test: int | None = None
    params_m: float | None = None
    latency_ms: float | None = None
    throughput: float | None = None
    train_throughput: float | None = None
    timed_on: str | None = None
    flags: tuple[str, ...] = ()
    regime: str = ""  # what attention / the last map sees (Cell.regime_text); "" for references
    ablation_of: str | None = None  # the row this one ablates (model.ablation_of)
    variant_of: str | None = None  # a grid variant: the model entry it varies (metrics.json variant_of, 0.6)
    factors: dict[str, Any] = field(default_factory=dict)  # its grid values, {dotted key: value}
    tuning: dict[str, Any] | None = None  # the fine-tuning regime (metrics.json tuning, 0.6); None: older runs
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    # Filled by agebench.report.significance.analyse: place in the data set's table, rank group, intervals.
    rank: int | None = None
    group: int | None = None
    interval: RowInterval | None = None

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.cells]

    def sort_key(self) -> tuple:
        rank = 1 if self.status in ("failed", "invalid") else 0
        return (
            self.dataset,
            self.table,  # "" (the data set's reference split) first, then merged cells on other test splits
            rank,
            math.inf if self.mae_mean is None else self.mae_mean,
            self.model,
            self.source != MEASURED,
            self.origin,
            self.seeds,
        )

    @property
    def source_text(self) -> str:
        """``measured``, or ``measured (labA)`` in a merged leaderboard."""
        return f"{self.source} ({self.origin})" if self.origin else self.source

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable row (CSV and JSON): plain values, rounded so reruns print identically."""
        iv = self.interval
        return {
            "dataset": self.dataset,
            "model": self.model,
            "source": self.source,
            "status": self.status,
            "rank": self.rank,
            "group": self.group,
            "seeds": self.seeds,
            "n_seeds": len(self.cells),
            "mae_mean": _round(self.mae_mean),
            "mae_std": _round(self.mae_std),
            "mae_ci_low": _round(iv.mae[0]) if iv else None,
            "mae_ci_high": _round(iv.mae[1]) if iv else None,
            "cs5_mean": _round(self.cs5_mean),
            "cs5_ci_low": _round(iv.cs[5][0]) if iv else None,
            "cs5_ci_high": _round(iv.cs[5][1]) if iv else None,
            "ci_level": iv.level if iv else None,
            "ci_unit": iv.unit if iv else None,
            "rmse_mean": _round(self.rmse_mean),
            "baseline_mae": _round(self.baseline_mae),
            "n_test": self.n_test,
            "params_m": _round(self.params_m),
            "latency_ms": _round(self.latency_ms),
            "throughput": _round(self.throughput),
            "train_throughput": _round(self.train_throughput),
            "timed_on": self.timed_on,
            "regime": self.cells[0].regime if self.cells else None,
            "ablation_of": self.ablation_of,
            "variant_of": self.variant_of,
            "factors": dict(self.factors),
            "tuning": tuning_text(self.tuning),
            "trainable_params_m": _round(self.tuning["trainable_params"] / 1e6)
            if self.tuning and isinstance(self.tuning.get("trainable_params"), int)
            else None,
            "flags": list(self.flags),
            "error": self.error,
            "origin": self.origin or None,
            "table": self.table or None,
            "cells": [c.rel for c in self.cells],
            "warnings": list(self.warnings),
        }

    def display(self) -> dict[str, str]:
        """Human text per DISPLAY_COLUMNS; a failed row shows its error where the MAE would be, and no number."""
        if self.status in ("failed", "invalid"):
            seeds = ("seed " if len(self.seeds) == 1 else "seeds ") + ", ".join(str(s) for s in self.seeds)
            return {
                "dataset": self.dataset,
                "rank": "",
                "group": "",
                "model": self.model,
                "source": self.source_text,
                "regime": self.regime,
                "seeds": seeds,
                "mae": f"{self.status}: {self.error}",
                "mae_ci": "",
                "cs5": "",
                "baseline": "",
                "params": "",
                "latency": "",
                "throughput": "",
                "timed_on": "",
                "flags": ", ".join(self.flags),
            }
        if self.mae_mean is None:
            mae = ""
        elif self.mae_std is None:
            mae = f"{self.mae_mean:.2f}"
        else:
            mae = f"{self.mae_mean:.2f} ± {self.mae_std:.2f}"
        seeds = f"n={len(self.cells)}" if self.cells else ""
        measured = self.status == "ok" and self.source == MEASURED
        return {
            "dataset": self.dataset,
            "rank": _fmt(self.rank, "{}"),
            "group": _fmt(self.group, "{}") if self.group is not None or not measured else "–",
            "model": self.model,
            "source": self.source_text,
            "regime": self.regime,
            "seeds": seeds,
            "mae": mae,
            "mae_ci": f"[{self.interval.mae[0]:.2f}, {self.interval.mae[1]:.2f}]" if self.interval else "",
            "cs5": _fmt(self.cs5_mean, "{:.1%}"),
            "baseline": _fmt(self.baseline_mae, "{:.2f}"),
            "params": _fmt(self.params_m, "{:.2f}"),
            "latency": _fmt(self.latency_ms, "{:.2f}"),
            "throughput": _fmt(self.throughput, "{:.0f}"),
            "timed_on": self.timed_on or "",
            "flags": ", ".join(self.flags),
        }


def tuning_text(tuning: dict[str, Any] | None) -> str | None:
    """``full``, ``frozen backbone``, ``last 2 blocks``, plus ``layer decay 0.75`` / ``backbone lr x0.1``."""
    if not isinstance(tuning, dict):
        return None
    if tuning.get("freeze") == "backbone":
        parts = ["frozen backbone"]
    elif tuning.get("train_last_blocks"):
        parts = [f"last {tuning['train_last_blocks']} block(s)"]
    else:
        parts = ["full"]
    if tuning.get("layer_decay") is not None:
        parts.append(f"layer decay {tuning['layer_decay']:g}")
    if tuning.get("backbone_lr_mult", 1.0) != 1.0:
        parts.append(f"backbone lr x{tuning['backbone_lr_mult']:g}")
    return ", ".join(parts)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | int | None, spec: str) -> str:
    return "" if value is None else spec.format(value)


def _mean(cells: Iterable[Cell], key: str) -> float | None:
    values = [v for v in (c.number(key) for c in cells) if v is not None]
    return statistics.fmean(values) if values else None


def cell_flags(cell: Cell) -> tuple[str, ...]:
    """Flags that decide which seeds may be pooled (the cross-dataset overlap is not one: see row_flags)."""
    flags = []
    if cell.leaky:
        flags.append(FLAG_LEAKY)
    if not cell.subject_exclusive:
        flags.append(FLAG_NOT_EXCLUSIVE)
    if cell.warnings:
        flags.append(FLAG_UNVERIFIED)
    if cell.metrics.get("skipped_images"):
        flags.append(FLAG_SKIPPED)
    if isinstance(cell.metrics.get("folds"), dict):
        flags.append(FLAG_FOLDS)
    if cell.metrics.get("tta", "none") != "none":
        flags.append(FLAG_TTA if cell.metrics["tta"] == "flip" else f"tta {cell.metrics['tta']}")
    if cell.degenerate:
        flags.append(FLAG_DEGENERATE)
    if cell.split_table:
        flags.append(FLAG_OTHER_SPLIT)
    return tuple(flags)


def _cross_overlap(cell: Cell) -> bool:
    cross = cell.metrics.get("cross")
    return isinstance(cross, dict) and any(
        isinstance(c, dict) and isinstance(c.get("overlap"), dict) and c["overlap"].get("flagged")
        for c in cross.values()
    )


def row_flags(cells: list[Cell]) -> tuple[str, ...]:
    """The pooled seeds' flags, plus ``cross-eval overlap`` when any seed's cross target overlaps its training
    data (a seed whose cross evaluation is missing must not split the in-domain row)."""
    flags = cell_flags(cells[0])
    return flags + ((FLAG_CROSS_OVERLAP,) if any(_cross_overlap(c) for c in cells) else ())


def pooled_row(cells: list[Cell]) -> Row:
    """Seeds of one (data set, model, flags) group: means over seeds, MAE std with ddof=1 from two seeds on."""
    first = cells[0]
    maes = [c.number("mae") for c in cells]
    params = _mean(cells, "params")
    n_tests = sorted({c.metrics.get("n_test") for c in cells if isinstance(c.metrics.get("n_test"), int)})
    timed_on = sorted({c.timed_on for c in cells if c.timed_on})
    return Row(
        dataset=first.dataset,
        model=first.model,
        origin=first.origin,
        table=first.split_table or "",
        cells=tuple(cells),
        mae_mean=statistics.fmean(maes),
        mae_std=statistics.stdev(maes) if len(maes) >= 2 else None,
        cs5_mean=_mean(cells, "cs5"),
        rmse_mean=_mean(cells, "rmse"),
        baseline_mae=_mean(cells, "baseline_mae"),
        n_test=n_tests[0] if len(n_tests) == 1 else None,
        params_m=None if params is None else params / 1e6,
        latency_ms=_mean(cells, "latency_ms"),
        throughput=_mean(cells, "throughput"),
        train_throughput=_mean(cells, "train_throughput"),
        timed_on="; ".join(timed_on) or None,
        flags=row_flags(cells),
        regime=" / ".join(sorted({c.regime_text for c in cells})),
        ablation_of=next((str(a) for c in cells if (a := c.metrics.get("ablation_of"))), None),
        variant_of=first.metrics.get("variant_of") if isinstance(first.metrics.get("variant_of"), str) else None,
        factors=dict(first.metrics["factors"]) if isinstance(first.metrics.get("factors"), dict) else {},
        tuning=first.metrics.get("tuning") if isinstance(first.metrics.get("tuning"), dict) else None,
        warnings=[f"{c.rel}: {w}" for c in cells for w in c.warnings],
    )


def build_rows(cells: list[Cell], reference: str = "matching") -> list[Row]:
    """Leaderboard rows sorted by data set, then MAE (failures last); ``reference``: matching | all | none."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        flags = cell_flags(cell) if cell.ok else cell.error
        key = (cell.dataset, cell.model, cell.origin, cell.split_table, cell.status, flags)
        groups.setdefault(key, []).append(cell)
    rows = []
    for (dataset, model, origin, _, status, _), members in groups.items():
        if status == "ok":
            rows.append(pooled_row(members))
        else:
            rows.append(
                Row(
                    dataset=dataset,
                    model=model,
                    origin=origin,
                    status=status,
                    cells=tuple(members),
                    error=members[0].error,
                    flags=cell_flags(members[0]),
                    regime=members[0].regime_text,
                    variant_of=members[0].metrics.get("variant_of"),
                    factors=dict(members[0].metrics.get("factors") or {}),
                )
            )
    if reference != "none":
        datasets = sorted({c.dataset for c in cells}) if reference == "matching" else None
        for ref in references_for(datasets):
            rows.append(
                Row(
                    dataset=ref.dataset,
                    model=ref.model,
                    source=SOURCE,
                    status="reference",
                    mae_mean=ref.mae,
                    params_m=ref.params_m,
                    latency_ms=ref.latency_ms,
                    timed_on="authors' hardware" if ref.latency_ms is not None else None,
                )
            )
    return sorted(rows, key=Row.sort_key)


def cell_record(cell: Cell) -> dict[str, Any]:
    """A cell for the JSON file: its metrics as written, minus the run timestamp (it would make every diff noisy)."""
    metrics = {k: v for k, v in cell.metrics.items() if k not in ("dataset", "model", "seed", "status", "error")}
    if isinstance(metrics.get("provenance"), dict):
        metrics["provenance"] = {k: v for k, v in metrics["provenance"].items() if k != "timestamp"}
    return {
        "dataset": cell.dataset,
        "model": cell.model,
        "seed": cell.seed,
        "path": cell.rel,
        "origin": cell.origin or None,
        "split_note": cell.split_note,
        "status": cell.status,
        "error": cell.error,
        "warnings": list(cell.warnings),
        "metrics": metrics,
    }


# CSV: the row dict without the lists only JSON can hold well (cell paths, warnings).
CSV_COLUMNS = [k for k in Row("", "").to_dict() if k not in ("cells", "warnings", "factors")]


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        d = row.to_dict()
        d["seeds"] = ";".join(str(s) for s in d["seeds"])
        d["flags"] = ";".join(d["flags"])
        writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def format_p(value: float | None) -> str:
    """A p-value as every table prints it: 3 decimals, "< 0.001" below that."""
    if value is None:
        return ""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
