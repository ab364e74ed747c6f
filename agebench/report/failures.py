"""Failure report of one result cell: the worst test predictions, MAE by age group next to the training ages.

Reads result files only (metrics.json, predictions.csv, config.yaml for where the images are): no torch, like the
rest of the leaderboard code. Writes, where the HTML leaderboard links to them:

* ``<cell>/failure_report.md``: worst cases table, MAE and mean signed error by age group, imbalance findings;
* ``<cell>/explain/worst_cases.png``: thumbnails of the worst cases with true and predicted age;
* ``<cell>/explain/mae_by_age.png``: MAE per age group beside the training images per group.

An age group is flagged as *under-represented and poorly predicted* when it holds less than half of an even share
of the training images (1 / number of groups) and its MAE is above the overall test MAE: the usual signature of
data imbalance (few old faces in training, large errors on old faces), as opposed to a hard but well-covered group.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agebench.atomic import atomic_open, write_text
from agebench.errors import UserError

REPORT = "failure_report.md"
WORST_PNG = "worst_cases.png"
GROUPS_PNG = "mae_by_age.png"
# The age groups of metrics.json's mae_by_age_group (docs/results_schema.md).
SCHEMA_GROUPS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
_PNG_METADATA = {"Software": None}  # no version string in the file: same inputs, same bytes


@dataclass(frozen=True)
class Prediction:
    path: str
    age: float
    pred: float

    @property
    def error(self) -> float:
        """Signed error, predicted minus true: negative means the model thought the face younger."""
        return self.pred - self.age


@dataclass(frozen=True)
class Group:
    """One age group of metrics.json's ``mae_by_age_group``, with what the other files add to it."""

    name: str
    lo: float
    hi: float
    n_test: int
    mae: float | None  # None: no test image in this group
    bias: float | None  # mean signed error (pred - true)
    n_train: int | None  # None when metrics.json has no training histogram
    flagged: bool = False


@dataclass
class FailureReport:
    report: Path
    worst_png: Path
    groups_png: Path
    worst: list[Prediction]
    groups: list[Group]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is {path.parent} a finished result cell?)") from None
    except ValueError as err:
        raise UserError(f"{path}: invalid JSON ({err})") from None


def read_predictions(path: Path) -> list[Prediction]:
    if not path.is_file():
        raise UserError(f"{path}: not found (is {path.parent} a finished result cell?)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            return [Prediction(r["path"], float(r["age"]), float(r["pred"])) for r in csv.DictReader(fh)]
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: expected columns path, age, pred with numbers ({err})") from None


def worst_cases(predictions: list[Prediction], n: int) -> list[Prediction]:
    """The ``n`` largest absolute errors, largest first; ties broken by path so reruns agree."""
    return sorted(predictions, key=lambda p: (-abs(p.error), p.path))[:n]


def group_bounds(name: str) -> tuple[float, float]:
    """``"10-19"`` -> (10, 20); ``"70+"`` -> (70, inf): the group names metrics.json uses."""
    try:
        if name.endswith("+"):
            return float(name[:-1]), math.inf
        lo, hi = name.split("-")
        return float(lo), float(hi) + 1
    except ValueError:
        raise UserError(f"metrics.json: age group {name!r} is not of the form 'lo-hi' or 'lo+'") from None


def _train_count(hist: dict[str, Any] | None, lo: float, hi: float) -> int | None:
    if not hist or "edges" not in hist or "counts" not in hist:
        return None
    edges, counts = hist["edges"], hist["counts"]
    return int(sum(c for e, c in zip(edges[:-1], counts, strict=True) if lo <= e < hi))


def age_groups(metrics: dict[str, Any], predictions: list[Prediction]) -> list[Group]:
    """Every age group with test or training images, youngest first: test MAE and n from metrics.json, signed bias
    from the predictions, training images from the histogram (so groups missing from the test set still show)."""
    hist = metrics.get("train_age_histogram")
    by_test = metrics.get("mae_by_age_group") or {}
    names = sorted({*SCHEMA_GROUPS, *by_test}, key=lambda name: group_bounds(name)[0])
    groups = []
    for name in names:
        lo, hi = group_bounds(name)
        cell, n_train = by_test.get(name), _train_count(hist, lo, hi)
        if cell is None and not n_train:
            continue
        errors = [p.error for p in predictions if lo <= p.age < hi]
        bias = float(np.mean(errors)) if errors else None
        mae = float(cell["mae"]) if cell else None
        groups.append(Group(name, lo, hi, int(cell["n"]) if cell else 0, mae, bias, n_train))
    return flag_imbalance(groups, metrics.get("mae"))


def flag_imbalance(groups: list[Group], overall_mae: float | None) -> list[Group]:
    """Mark groups with under half an even share of the training images and an MAE above the overall MAE."""
    total = sum(g.n_train or 0 for g in groups)
    if not groups or overall_mae is None or total == 0 or any(g.n_train is None for g in groups):
        return groups
    even = total / len(groups)
    return [
        replace(g, flagged=g.mae is not None and (g.n_train or 0) < 0.5 * even and g.mae > overall_mae) for g in groups
    ]


def image_root(run_dir: Path) -> Path | None:
    """Where the run's images are: data.root of its config.yaml, else the manifest's folder."""
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
    if data.get("root"):
        return Path(data["root"])
    return Path(data["manifest"]).parent if data.get("manifest") else None


def _thumbnail(root: Path | None, rel: str) -> np.ndarray | None:
    from agebench.data.images import ImageDecodeError, read_rgb

    if root is None or not (root / rel).is_file():
        return None
    try:
        return read_rgb(root / rel)
    except ImageDecodeError:
        return None


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, metadata=_PNG_METADATA)


def render_worst(cases: list[Prediction], root: Path | None, path: Path, cols: int = 6) -> None:
    """Thumbnails of the worst cases; an image that cannot be read shows as a grey tile saying so."""
    from matplotlib.figure import Figure

    cols = max(1, min(cols, len(cases)))
    rows = max(1, math.ceil(len(cases) / cols))
    fig = Figure(figsize=(2.0 * cols, 2.4 * rows), layout="constrained")
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i >= len(cases):
            continue
        case = cases[i]
        image = _thumbnail(root, case.path)
        if image is None:
            ax.imshow(np.full((8, 8, 3), 200, np.uint8))
            ax.text(4, 4, "image not found", ha="center", va="center", fontsize=7)
        else:
            ax.imshow(image)
        ax.set_title(f"#{i + 1} true {case.age:g}, pred {case.pred:.1f}\nerror {case.error:+.1f}", fontsize=8)
    _save(fig, path)


def render_groups(groups: list[Group], path: Path, title: str) -> None:
    """Two panels on the same age groups: test MAE, and training images (flagged groups red in both)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    names = [g.name for g in groups]
    x = np.arange(len(groups))
    colors = ["#d62728" if g.flagged else "#1f77b4" for g in groups]
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(x, [g.mae or 0.0 for g in groups], color=colors)
    for xi, g in zip(x, groups, strict=True):
        ax.text(
            xi,
            g.mae or 0.0,
            f"n={g.n_test}" if g.mae is not None else "no test\nimages",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set(xticks=x, xticklabels=names, xlabel="true age", ylabel="test MAE (years)", title="MAE by age group")
    ax2 = fig.add_subplot(1, 2, 2)
    if all(g.n_train is not None for g in groups):
        ax2.bar(x, [g.n_train or 0 for g in groups], color=colors)
        ax2.set(ylabel="training images")
    else:
        ax2.text(0.5, 0.5, "no train_age_histogram in metrics.json", ha="center", transform=ax2.transAxes)
    ax2.set(xticks=x, xticklabels=names, xlabel="age", title="training set ages")
    fig.suptitle(f"{title} (red: few training images and MAE above overall)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _num(v: Any, fmt: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _markdown(metrics: dict[str, Any], worst: list[Prediction], groups: list[Group], explain_dir: str) -> str:
    title = f"{metrics.get('model', '?')} on {metrics.get('dataset', '?')} (seed {metrics.get('seed', '?')})"
    lines = [
        f"# Failure report: {title}",
        "",
        f"Test MAE {_num(metrics.get('mae'))} years on {metrics.get('n_test', '?')} images; predicting the mean "
        f"training age gives {_num(metrics.get('baseline_mae'))}.",
        "",
        f"## The {len(worst)} worst test predictions",
        "",
        f"![worst cases]({explain_dir}/{WORST_PNG})",
        "",
        "| # | image | true age | predicted | error (pred - true) |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {i} | `{p.path}` | {p.age:g} | {p.pred:.1f} | {p.error:+.1f} |" for i, p in enumerate(worst, 1)]
    lines += ["", "## MAE by age group", "", f"![MAE by age group and training ages]({explain_dir}/{GROUPS_PNG})", ""]
    lines += [
        "| age group | test images | MAE | mean error (pred - true) | training images |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {g.name} | {g.n_test} | {_num(g.mae)} | {_num(g.bias, '+.2f')} | {_num(g.n_train, 'd')} |" for g in groups
    ]
    lines += ["", "## Data imbalance", "", *_findings(metrics, groups)]
    return "\n".join(lines) + "\n"


def _findings(metrics: dict[str, Any], groups: list[Group]) -> list[str]:
    tested = [g for g in groups if g.mae is not None]
    if not tested or any(g.n_train is None for g in groups):
        return ["- metrics.json has no training age histogram, so MAE cannot be set against training ages."]
    total = sum(g.n_train or 0 for g in groups)
    flagged = [g for g in groups if g.flagged]
    out = []
    if flagged:
        parts = [
            f"{g.name} ({g.n_train} training images, {100 * (g.n_train or 0) / total:.1f}% of train; MAE {g.mae:.2f})"
            for g in flagged
        ]
        out.append(
            f"- Few training images and MAE above the overall {_num(metrics.get('mae'))}: {'; '.join(parts)}. "
            "More training data (or re-weighting) for these ages is the first thing to try."
        )
    else:
        out.append("- No age group combines few training images (< half an even share) with an above-average MAE.")
    worst = max(tested, key=lambda g: g.mae or 0.0)
    bias = worst.bias or 0.0
    out.append(
        f"- Highest MAE: {worst.name} ({worst.mae:.2f} years on {worst.n_test} test image(s), {worst.n_train} "
        f"training images); mean error {bias:+.2f} years ({'over' if bias > 0 else 'under'}-estimated on average)."
    )
    young, old = tested[0], tested[-1]
    if len(tested) > 1 and (young.bias or 0) > 0 > (old.bias or 0):
        out.append(
            f"- Predictions are pulled towards the middle of the training ages: the youngest group is over-estimated "
            f"({young.name}: {young.bias:+.2f} years), the oldest under-estimated ({old.name}: {old.bias:+.2f})."
        )
    untested = [g.name for g in groups if g.mae is None]
    if untested:
        out.append(f"- Age groups with training images but no test image: {', '.join(untested)}.")
    return out


def write_failure_report(run_dir: str | Path, n: int = 12, root: str | Path | None = None) -> FailureReport:
    """Write the failure report of one result cell; ``root`` overrides where the images are found."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: result folder not found")
    if n < 1:
        raise UserError(f"--worst {n}: must be at least 1")
    metrics = read_json(run_dir / "metrics.json")
    if metrics.get("status", "ok") != "ok":
        raise UserError(f"{run_dir}: the run failed ({metrics.get('error')}); there is nothing to report on")
    predictions = read_predictions(run_dir / "predictions.csv")
    if not predictions:
        raise UserError(f"{run_dir / 'predictions.csv'}: no rows")
    worst = worst_cases(predictions, n)
    groups = age_groups(metrics, predictions)
    explain_dir = run_dir / "explain"
    worst_png, groups_png = explain_dir / WORST_PNG, explain_dir / GROUPS_PNG
    render_worst(worst, Path(root) if root is not None else image_root(run_dir), worst_png)
    render_groups(groups, groups_png, f"{metrics.get('model', '?')} on {metrics.get('dataset', '?')}")
    report = run_dir / REPORT
    write_text(report, _markdown(metrics, worst, groups, explain_dir.name))
    return FailureReport(report, worst_png, groups_png, worst, groups)
