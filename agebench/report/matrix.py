"""The cross-dataset matrix: for each model, MAE of every (training set, test set) pair.

Read from result files only: the diagonal is the leaderboard row of the in-domain cells (so it equals the
ordinary table's figure by construction), an off-diagonal entry pools the ``cross.<target>`` records of the same
cells and their ``predictions.<target>.csv``. Intervals come from the same two-level bootstrap as the rows.
An entry whose training data (train + val) shares images or people with the target's test split is flagged
(``overlap``), never silently mixed: its figure is optimistic.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agebench.report.leaderboard import MEASURED, Row
from agebench.report.reference import CROSS_SOURCE, cross_references_for
from agebench.report.results import Cell, as_number, load_predictions, mean_of

if TYPE_CHECKING:
    from agebench.report.significance import StatsConfig

FORMAT_VERSION = 1
OVERLAP_MARK = "†"


@dataclass
class Entry:
    """One (model, training set, test set) figure pooled over the row's seeds."""

    model: str
    train: str
    test: str
    in_domain: bool
    seeds: list[int]
    mae_mean: float | None
    mae_std: float | None = None
    ci: tuple[float, float] | None = None
    cs5_mean: float | None = None
    n_test: int | None = None
    baseline_mae: float | None = None  # the target's mean predictor (its own train mean)
    source_mean_mae: float | None = None  # predicting the training set's mean age on the target
    overlap: bool = False
    shared_images: int = 0
    shared_subjects: int = 0
    missing_seeds: list[int] = field(default_factory=list)  # seeds of the row that lack this target

    def to_dict(self) -> dict[str, Any]:
        r = _round
        return {
            "model": self.model,
            "train": self.train,
            "test": self.test,
            "in_domain": self.in_domain,
            "seeds": self.seeds,
            "mae_mean": r(self.mae_mean),
            "mae_std": r(self.mae_std),
            "mae_ci_low": r(self.ci[0]) if self.ci else None,
            "mae_ci_high": r(self.ci[1]) if self.ci else None,
            "cs5_mean": r(self.cs5_mean),
            "n_test": self.n_test,
            "baseline_mae": r(self.baseline_mae),
            "source_mean_mae": r(self.source_mean_mae),
            "overlap": self.overlap,
            "shared_images": self.shared_images,
            "shared_subjects": self.shared_subjects,
            "missing_seeds": self.missing_seeds,
        }


@dataclass
class Matrix:
    """Per model: its training sets (rows), test sets (columns) and entries."""

    model: str
    train: list[str]
    test: list[str]
    entries: dict[tuple[str, str], Entry]
    level: float = 0.95  # of the intervals

    def get(self, train: str, test: str) -> Entry | None:
        return self.entries.get((train, test))

    def baselines(self) -> dict[str, float]:
        """Each test set's mean-predictor MAE, as recorded by any entry that tested on it."""
        out: dict[str, float] = {}
        for e in self.entries.values():
            if e.baseline_mae is not None:
                out.setdefault(e.test, e.baseline_mae)
        return out


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _cross_record(cell: Cell, target: str) -> dict[str, Any] | None:
    cross = cell.metrics.get("cross")
    record = cross.get(target) if isinstance(cross, dict) else None
    return record if isinstance(record, dict) and as_number(record.get("mae")) is not None else None


def cross_targets(cell: Cell) -> list[str]:
    cross = cell.metrics.get("cross") if cell.ok else None
    return [t for t in cross if _cross_record(cell, t)] if isinstance(cross, dict) else []


def overlapping_targets(cell: Cell) -> list[str]:
    """Targets whose test split shares images or people with what this cell trained on."""
    return [t for t in cross_targets(cell) if (_cross_record(cell, t) or {}).get("overlap", {}).get("flagged")]


def _interval(cells: list[Cell], key: str, stats: StatsConfig | None) -> tuple[float, float] | None:
    from agebench.report.significance import StatsConfig, row_interval

    iv = row_interval(tuple(cells), key, stats or StatsConfig())
    return iv.mae if iv else None


def _cross_entry(row: Row, target: str, stats: StatsConfig | None, with_ci: bool) -> Entry | None:
    have = [(c, rec) for c in row.cells if (rec := _cross_record(c, target)) is not None]
    if not have:
        return None
    maes = [float(rec["mae"]) for _, rec in have]
    overlaps = [rec.get("overlap") or {} for _, rec in have]
    with_preds = []
    for cell, rec in have if with_ci else ():
        try:
            preds = load_predictions(cell.path / str(rec.get("predictions") or f"predictions.{target}.csv"))
        except (OSError, UnicodeDecodeError, ValueError):
            preds = None
        with_preds.append(replace(cell, predictions=preds))
    n_tests = {rec.get("n_test") for _, rec in have}
    return Entry(
        model=row.model,
        train=row.dataset,
        test=target,
        in_domain=False,
        seeds=[c.seed for c, _ in have],
        mae_mean=statistics.fmean(maes),
        mae_std=statistics.stdev(maes) if len(maes) >= 2 else None,
        ci=_interval(with_preds, f"cross/{row.dataset}/{row.model}/{target}", stats) if with_ci else None,
        cs5_mean=mean_of([rec.get("cs5") for _, rec in have]),
        n_test=n_tests.pop() if len(n_tests) == 1 else None,
        baseline_mae=mean_of([rec.get("baseline_mae") for _, rec in have]),
        source_mean_mae=mean_of([rec.get("source_mean_mae") for _, rec in have]),
        overlap=any(o.get("flagged") for o in overlaps),
        shared_images=max(int(o.get("shared_images") or 0) for o in overlaps),
        shared_subjects=max(int(o.get("shared_subjects") or 0) for o in overlaps),
        missing_seeds=[c.seed for c in row.cells if _cross_record(c, target) is None],
    )


def _diagonal(row: Row) -> Entry:
    return Entry(
        model=row.model,
        train=row.dataset,
        test=row.dataset,
        in_domain=True,
        seeds=row.seeds,
        mae_mean=row.mae_mean,
        mae_std=row.mae_std,
        ci=row.interval.mae if row.interval else None,
        cs5_mean=row.cs5_mean,
        n_test=row.n_test,
        baseline_mae=row.baseline_mae,
    )


def build_matrices(rows: list[Row], stats: StatsConfig | None = None, with_ci: bool = True) -> list[Matrix]:
    """One matrix per model that has at least one cross-dataset result; [] when no cell predicted another set.
    ``with_ci=False`` skips the off-diagonal bootstrap (a plot needs only the means).

    Rows are the leaderboard's measured ok rows (intervals filled by the analysis when it ran). Where one
    (data set, model) has several rows (seeds split by flags), the one with the most seeds is used.
    """
    # A merged leaderboard: one matrix per model and source; cells on another test split stay out.
    measured = [r for r in rows if r.status == "ok" and r.source == MEASURED and not r.table]
    chosen: dict[tuple[str, str], Row] = {}
    for row in measured:
        key = (row.model + (f" ({row.origin})" if row.origin else ""), row.dataset)
        if key not in chosen or len(row.cells) > len(chosen[key].cells):
            chosen[key] = row
    matrices = []
    for model in sorted({m for m, _ in chosen}):
        model_rows = [r for (m, _), r in sorted(chosen.items()) if m == model]
        targets = {t for r in model_rows for c in r.cells for t in cross_targets(c)}
        if not targets:
            continue
        train = [r.dataset for r in model_rows]
        test = train + sorted(targets - set(train))
        entries: dict[tuple[str, str], Entry] = {}
        for row in model_rows:
            entries[(row.dataset, row.dataset)] = _diagonal(row)
            for target in sorted(targets - {row.dataset}):
                entry = _cross_entry(row, target, stats, with_ci)
                if entry is not None:
                    entries[(row.dataset, target)] = entry
        matrices.append(Matrix(model, train, test, entries, stats.level if stats else 0.95))
    return matrices


def _text(entry: Entry | None, with_ci: bool = True) -> str:
    if entry is None or entry.mae_mean is None:
        return "–"
    text = f"{entry.mae_mean:.2f}"
    if entry.mae_std is not None:
        text += f" ± {entry.mae_std:.2f}"
    if with_ci and entry.ci:
        text += f" [{entry.ci[0]:.2f}, {entry.ci[1]:.2f}]"
    if entry.overlap:
        text += f" {OVERLAP_MARK}"
    return text


def drop_summary(matrix: Matrix) -> str:
    """How much worse a test set is predicted by a model trained elsewhere than by its in-domain model: each
    off-diagonal entry against the diagonal entry of its column (the same test split, so test-set difficulty
    cancels), averaged."""
    diffs, ratios = [], []
    for e in matrix.entries.values():
        home = matrix.get(e.test, e.test)
        if e.in_domain or e.mae_mean is None or home is None or not home.mae_mean:
            continue
        diffs.append(e.mae_mean - home.mae_mean)
        ratios.append(e.mae_mean / home.mae_mean)
    if not diffs:
        return ""
    return (
        f"trained on another data set, MAE is {statistics.fmean(diffs):+.2f} years (x{statistics.fmean(ratios):.2f}) "
        f"against the in-domain model of the same test split, on average over {len(diffs)} pair(s)"
    )


def to_markdown(matrices: list[Matrix], heading: str = "##") -> str:
    """One table per model: rows are training sets, columns test sets; the diagonal is the in-domain result."""
    if not matrices:
        return "No cross-dataset results (set eval_on in the bench config).\n"
    lines = [f"{heading} Cross-dataset MAE (years)", ""]
    lines.append(
        "Rows: the data set trained on; columns: the test split predicted. The diagonal is the in-domain result "
        f"of the leaderboard; brackets hold the {matrices[0].level:.0%} interval; the last row is each test set's "
        "mean predictor."
    )
    lines.append("")
    flagged = False
    for m in matrices:
        lines += [f"**{m.model}**" + (f": {drop_summary(m)}" if drop_summary(m) else ""), ""]
        lines.append("| train \\ test | " + " | ".join(m.test) + " |")
        lines.append("|---|" + "---|" * len(m.test))
        for train in m.train:
            lines.append(f"| {train} | " + " | ".join(_text(m.get(train, t)) for t in m.test) + " |")
        base = m.baselines()
        lines.append("| *mean predictor* | " + " | ".join(_fmt(base.get(t)) for t in m.test) + " |")
        lines.append("")
        for e in m.entries.values():
            if e.overlap:
                flagged = True
                lines.append(
                    f"- {OVERLAP_MARK} {e.train} -> {e.test}: the training data shares {e.shared_images} image(s) "
                    f"and {e.shared_subjects} person(s) with the test split; the figure is optimistic"
                )
            if e.missing_seeds:
                lines.append(f"- {e.train} -> {e.test}: seed(s) {e.missing_seeds} not evaluated; pooled without them")
        lines.append("")
    if flagged:
        lines += [f"{OVERLAP_MARK} overlapping train and test data (see above).", ""]
    published = cross_references_for(data_sets(matrices))
    if published:
        lines += [f"Published landmark ({CROSS_SOURCE}; another model, their protocol and crops):", ""]
        lines += ["| model | trained on | tested on | MAE |", "|---|---|---|---|"]
        lines += [f"| {r.model} | {r.train} | {r.test} | {r.mae:.2f} |" for r in published] + [""]
    return "\n".join(lines)


def data_sets(matrices: list[Matrix]) -> list[str]:
    return sorted({name for m in matrices for name in m.train + m.test})


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


CSV_COLUMNS = list(Entry("", "", "", False, [], None).to_dict())


def to_csv(matrices: list[Matrix]) -> str:
    """Long format: one line per (model, train, test)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for m in matrices:
        for train in m.train:
            for test in m.test:
                e = m.get(train, test)
                if e is None:
                    continue
                d = e.to_dict()
                d["seeds"] = ";".join(str(s) for s in d["seeds"])
                d["missing_seeds"] = ";".join(str(s) for s in d["missing_seeds"])
                writer.writerow({k: "" if v is None else v for k, v in d.items()})
    return buf.getvalue()


def to_dict(matrices: list[Matrix]) -> dict[str, Any]:
    return {
        "format": "agebench-cross-matrix",
        "format_version": FORMAT_VERSION,
        "models": [
            {
                "model": m.model,
                "train": m.train,
                "test": m.test,
                "summary": drop_summary(m),
                "entries": [m.entries[(tr, te)].to_dict() for tr in m.train for te in m.test if (tr, te) in m.entries],
            }
            for m in matrices
        ],
        "published": [
            {"source": CROSS_SOURCE, "model": r.model, "train": r.train, "test": r.test, "mae": r.mae}
            for r in cross_references_for(data_sets(matrices))
        ],
    }


def to_json(matrices: list[Matrix]) -> str:
    return json.dumps(to_dict(matrices), indent=2, ensure_ascii=False) + "\n"


def matrix_figure(matrices: list[Matrix]):
    """One heat map per model (MAE; darker is worse), in-domain in bold, overlapping entries marked; None
    without data."""
    values = [e.mae_mean for m in matrices for e in m.entries.values() if e.mae_mean is not None]
    if not values:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    cols, rows = max(len(m.test) for m in matrices), max(len(m.train) for m in matrices)
    fig = Figure(figsize=(2.5 + 1.5 * cols * len(matrices), 2.2 + 0.8 * rows), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)
    vmin, vmax = min(values), max(values)
    span = (vmax - vmin) or 1.0
    image = None
    for ax, m in zip(axes[0], matrices, strict=True):
        grid = np.full((len(m.train), len(m.test)), np.nan)
        for i, tr in enumerate(m.train):
            for j, te in enumerate(m.test):
                e = m.get(tr, te)
                if e is None or e.mae_mean is None:
                    ax.text(j, i, "–", ha="center", va="center", color="grey")
                    continue
                grid[i, j] = e.mae_mean
                label = f"{e.mae_mean:.2f}" + (f"\n{OVERLAP_MARK} overlap" if e.overlap else "")
                color = "white" if (e.mae_mean - vmin) / span > 0.55 else "black"
                ax.text(j, i, label, ha="center", va="center", color=color, fontsize=9,
                        weight="bold" if e.in_domain else "normal")  # fmt: skip
        image = ax.imshow(grid, cmap="magma_r", vmin=vmin, vmax=vmin + span)
        ax.set_xticks(range(len(m.test)), m.test, rotation=30, ha="right")
        ax.set_yticks(range(len(m.train)), m.train)
        ax.set_xlabel("test set")
        if ax is axes[0][0]:
            ax.set_ylabel("trained on")
        ax.set_title(m.model, fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="MAE (years)", fraction=0.05)
    fig.suptitle("Cross-dataset MAE (bold: in-domain)", fontsize=10)
    return fig
