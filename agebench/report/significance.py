"""What the statistics say about a leaderboard: intervals per row, paired tests per pair, groups, Friedman.

This module turns result cells (predictions.csv read by agebench.report.results) into the inputs of the pure
functions in agebench.report.stats, and their outputs into plain records the renderers print. It decides the
protocol: which images pair up (same path, same seed), what a resampling unit is (a subject where
predictions.csv names one, else an image), which rows a Friedman test may use. It computes nothing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agebench.report import stats
from agebench.report.leaderboard import FLAG_LEAKY, FLAG_OTHER_SPLIT, Row, RowInterval
from agebench.report.results import Cell, Predictions

CS_KS = tuple(range(1, 11))
TEST_METHOD = "paired sign-flip permutation test"
CI_METHOD = "two-level BCa bootstrap (seeds; {unit}, drawn once for all seeds that share them)"


@dataclass(frozen=True)
class StatsConfig:
    """Knobs of every interval and test; alpha = 1 - level. A pair's CI is not multiplicity-corrected while its
    verdict uses the Holm-adjusted p, so in a table of many pairs a CI may exclude 0 for a pair called a tie."""

    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0
    n_permutations: int = 9999

    @property
    def alpha(self) -> float:
        return round(1 - self.level, 12)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_resamples": self.n_resamples,
            "level": self.level,
            "alpha": self.alpha,
            "seed": self.seed,
            "n_permutations": self.n_permutations,
            "interval": CI_METHOD.format(unit="subjects or images"),
            "test": f"{TEST_METHOD} on per-image differences of absolute error, summed per subject where known; "
            "two-sided; Holm-corrected over the pairs of each data set's table",
        }


class PairingError(ValueError):
    """Two sets of cells cannot be compared image by image (different test sets, no common seed...)."""


def _unit(predictions: list[Predictions]) -> str:
    return "subjects" if all(p.has_subjects for p in predictions) else "images"


def _aligned(preds: list[Predictions], values: list[np.ndarray], unit: str) -> tuple[list[stats.Clustered], bool]:
    """Per-seed clustered values; when every seed scored the same images they are put in the first seed's order
    so the bootstrap draws a face once for all seeds (shared units)."""
    first = preds[0]
    shared = all(set(p.paths) == set(first.paths) and len(p.paths) == len(first.paths) for p in preds)
    if shared:
        for k, p in enumerate(preds):
            if p.paths != first.paths:
                where = {path: i for i, path in enumerate(p.paths)}
                values[k] = values[k][[where[path] for path in first.paths]]
        groups = first.subjects if unit == "subjects" else None
        return [stats.cluster_sums(v, groups) for v in values], True
    clustered = [
        stats.cluster_sums(v, p.subjects if unit == "subjects" else None) for p, v in zip(preds, values, strict=True)
    ]
    return clustered, False


def row_interval(cells: tuple[Cell, ...], key: str, cfg: StatsConfig) -> RowInterval | None:
    """MAE and CS@1..10 intervals of a row's seeds; None without a readable predictions.csv for every seed,
    or with fewer than 2 units (subjects or images) in one."""
    preds = [c.predictions for c in cells if c.predictions is not None]
    if not preds or len(preds) != len(cells):
        return None
    unit = _unit(preds)
    values = []
    for p in preds:
        err = p.abs_errors
        values.append(np.column_stack([err] + [(err <= k).astype(np.float64) for k in CS_KS]))
    seeds, shared = _aligned(preds, values, unit)
    try:
        iv = stats.bootstrap_interval(seeds, cfg.n_resamples, cfg.level, stats.rng_for(cfg.seed, key), shared)
    except ValueError:
        return None
    return RowInterval(
        mae=(float(iv.low[0]), float(iv.high[0])),
        cs={k: (float(iv.low[i]), float(iv.high[i])) for i, k in enumerate(CS_KS, start=1)},
        unit=unit,
        n_units=max(len(s[1]) for s in seeds),
        level=cfg.level,
    )


@dataclass(frozen=True)
class Pair:
    """A paired comparison of a and b on one data set: delta = MAE_a - MAE_b over the seeds both have."""

    dataset: str
    a: str
    b: str
    seeds: tuple[int, ...]
    n_images: int
    n_units: int
    unit: str
    mae_a: float
    mae_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    level: float
    p_holm: float | None = None

    @property
    def p_adjusted(self) -> float:
        """The p-value verdicts use: Holm-adjusted within a table, the raw one for a pair on its own."""
        return self.p_holm if self.p_holm is not None else self.p_value

    def significant(self, alpha: float) -> bool:
        return self.p_adjusted < alpha

    def verdict(self, alpha: float) -> str:
        if not self.significant(alpha):
            return "no significant difference"
        return f"{self.a if self.delta < 0 else self.b} better"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "a": self.a,
            "b": self.b,
            "n_images": self.n_images,
            "n_seeds": len(self.seeds),
            "seeds": list(self.seeds),
            "unit": self.unit,
            "n_units": self.n_units,
            "mae_a": _r(self.mae_a),
            "mae_b": _r(self.mae_b),
            "delta_mae": _r(self.delta),
            "ci_low": _r(self.ci_low),
            "ci_high": _r(self.ci_high),
            "level": self.level,
            "p_value": _r(self.p_value),
            "p_holm": _r(self.p_holm),
            "method": f"{TEST_METHOD} (p); {CI_METHOD.format(unit=self.unit)} (CI)",
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _by_seed(cells: list[Cell], name: str) -> dict[int, Cell]:
    out: dict[int, Cell] = {}
    for cell in cells:
        if cell.seed in out:
            raise PairingError(f"{name}: two cells with seed {cell.seed} ({out[cell.seed].rel}, {cell.rel})")
        out[cell.seed] = cell
    return out


@dataclass
class Paired:
    """Per common seed: a's predictions and |err_a| - |err_b| in a's image order, and each model's MAE."""

    seeds: list[int] = field(default_factory=list)
    preds: list[Predictions] = field(default_factory=list)
    diffs: list[np.ndarray] = field(default_factory=list)
    mae_a: list[float] = field(default_factory=list)
    mae_b: list[float] = field(default_factory=list)


def _readable(cell: Cell) -> Predictions:
    if cell.predictions is None or not len(cell.predictions.ages):
        raise PairingError(f"{cell.rel}: no readable predictions.csv to pair images with")
    return cell.predictions


def paired_differences(cells_a: list[Cell], cells_b: list[Cell], a: str = "a", b: str = "b") -> Paired:
    """Per common seed, |err_a| - |err_b| matched by image path; refuses cells whose test sets differ."""
    by_a, by_b = _by_seed(cells_a, a), _by_seed(cells_b, b)
    common = sorted(set(by_a) & set(by_b))
    if not common:
        raise PairingError(f"{a} and {b} share no seed ({a}: {sorted(by_a)}, {b}: {sorted(by_b)})")
    out = Paired()
    for seed in common:
        ca, cb = by_a[seed], by_b[seed]
        pa, pb = _readable(ca), _readable(cb)
        for cell, pred in ((ca, pa), (cb, pb)):
            if len(set(pred.paths)) != len(pred.paths):
                raise PairingError(f"{cell.rel}: predictions.csv lists an image more than once")
        index = {p: i for i, p in enumerate(pb.paths)}
        if set(pa.paths) != set(index):
            shared = len(set(pa.paths) & set(index))
            raise PairingError(
                f"test sets differ: {ca.rel} has {len(pa.paths)} images, {cb.rel} has {len(pb.paths)}, "
                f"{shared} paths in common"
            )
        order = np.array([index[p] for p in pa.paths], dtype=np.int64)
        if not np.allclose(pa.ages, pb.ages[order], atol=1e-3):
            raise PairingError(f"test sets differ: {ca.rel} and {cb.rel} give the same images different ages")
        out.seeds.append(seed)
        out.preds.append(pa)
        out.diffs.append(pa.abs_errors - pb.abs_errors[order])
        out.mae_a.append(float(pa.abs_errors.mean()))
        out.mae_b.append(float(pb.abs_errors.mean()))
    return out


def compare(dataset: str, a: str, cells_a: list[Cell], b: str, cells_b: list[Cell], cfg: StatsConfig) -> Pair:
    """The paired comparison of a against b (raises PairingError when they cannot be paired)."""
    data = paired_differences(cells_a, cells_b, a, b)
    unit = _unit(data.preds)
    seeds, shared = _aligned(data.preds, list(data.diffs), unit)
    if any(len(counts) < 2 for _, counts in seeds):
        raise PairingError(f"{a} and {b}: fewer than 2 {unit} in the test split, nothing to resample")
    key = f"{dataset}/{a}/{b}"
    rng_ci, rng_test = stats.rng_for(cfg.seed, key + "/ci"), stats.rng_for(cfg.seed, key + "/test")
    iv = stats.bootstrap_interval(seeds, cfg.n_resamples, cfg.level, rng_ci, shared)
    p = stats.sign_flip_test(seeds, cfg.n_permutations, rng_test, shared)
    return Pair(
        dataset=dataset,
        a=a,
        b=b,
        seeds=tuple(data.seeds),
        n_images=len(data.diffs[0]),
        n_units=max(len(c) for _, c in seeds),
        unit=unit,
        mae_a=float(np.mean(data.mae_a)),
        mae_b=float(np.mean(data.mae_b)),
        delta=float(iv.estimate[0]),
        ci_low=float(iv.low[0]),
        ci_high=float(iv.high[0]),
        p_value=p,
        level=cfg.level,
    )


@dataclass
class DatasetComparison:
    """Every pair of a data set's measured rows, Holm-corrected together, and the rank groups they give."""

    dataset: str
    labels: list[str]  # measured rows in leaderboard (MAE) order
    pairs: list[Pair] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)  # {"a", "b", "reason"}
    groups: dict[str, int | None] = field(default_factory=dict)

    def pair(self, a: str, b: str) -> Pair | None:
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
        return None

    def summary(self, alpha: float) -> str:
        """One line saying what the groups mean for this table."""
        if len(self.labels) < 2:
            return f"{self.dataset}: one measured row, nothing to compare."
        top = [label for label in self.labels if self.groups.get(label) == 1]
        unknown = [label for label in self.labels if self.groups.get(label) is None]
        if len(top) == len(self.labels):
            return f"{self.dataset}: no row differs significantly from the best; the table does not rank them (a tie)."
        text = (
            f"{self.dataset}: {_join(top)} {'is' if len(top) == 1 else 'tie'} for best (group 1); "
            f"{len(self.labels) - len(top) - len(unknown)} row(s) are significantly worse "
            f"(Holm-adjusted p < {alpha:g})"
        )
        if unknown:
            text += f"; {_join(unknown)} could not be compared (another test set)"
        return text + "."


def _join(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def row_label(row: Row) -> str:
    """A row's name in comparisons: the model, its source in a merged leaderboard, and its flags where it has
    any (a leaky seed is its own row)."""
    origin = f" ({row.origin})" if row.origin else ""
    return row.model + origin + (f" [{', '.join(row.flags)}]" if row.flags else "")


def _interval_key(row: Row) -> str:
    """The seed of a row's interval: data set, model and flags, not the source, so a row's interval is the same
    in a merged leaderboard as in its own folder's."""
    flags = [f for f in row.flags if f != FLAG_OTHER_SPLIT]
    return f"{row.dataset}/{row.model}" + (f" [{', '.join(flags)}]" if flags else "")


def compare_dataset(dataset: str, rows: list[Row], cfg: StatsConfig) -> DatasetComparison:
    """All pairs of ``rows`` (measured, ok, best first), Holm over the pairs, then rank groups."""
    labels = [row_label(r) for r in rows]
    result = DatasetComparison(dataset, labels)
    p_matrix = np.full((len(rows), len(rows)), np.nan)
    delta = np.full((len(rows), len(rows)), np.nan)
    raw: list[tuple[int, int, Pair]] = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            try:
                pair = compare(dataset, labels[i], list(rows[i].cells), labels[j], list(rows[j].cells), cfg)
            except PairingError as err:
                result.refused.append({"a": labels[i], "b": labels[j], "reason": str(err)})
                continue
            raw.append((i, j, pair))
    adjusted = stats.holm([p.p_value for _, _, p in raw])
    for (i, j, pair), p_holm in zip(raw, adjusted, strict=True):
        result.pairs.append(replace(pair, p_holm=float(p_holm)))
        p_matrix[i, j] = p_matrix[j, i] = p_holm
        delta[i, j], delta[j, i] = pair.delta, -pair.delta
    groups = stats.rank_groups(p_matrix, delta, cfg.alpha) if rows else []
    result.groups = dict(zip(labels, groups, strict=True))
    return result


@dataclass(frozen=True)
class FriedmanSummary:
    """Friedman's test over the data sets, Nemenyi's CD and the cliques of the CD diagram."""

    datasets: list[str]
    models: list[str]
    mae: list[list[float]]  # [data set][model]
    result: stats.FriedmanResult
    cd: float
    cliques: list[tuple[int, ...]]
    alpha: float
    excluded: list[str]

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "datasets": self.datasets,
            "models": self.models,
            "mae": [[_r(v) for v in row] for row in self.mae],
            "avg_ranks": [_r(v) for v in r.avg_ranks],
            "chi2": _r(r.statistic) if np.isfinite(r.statistic) else None,
            "p_value": _r(r.pvalue) if np.isfinite(r.pvalue) else None,
            "iman_davenport_f": _r(r.iman_davenport) if np.isfinite(r.iman_davenport) else None,
            "iman_davenport_p": _r(r.iman_davenport_p) if np.isfinite(r.iman_davenport_p) else None,
            "nemenyi_cd": _r(self.cd),
            "alpha": self.alpha,
            "cliques": [[self.models[i] for i in c] for c in self.cliques],
            "excluded_models": self.excluded,
        }


def friedman_over_datasets(rows: list[Row], alpha: float) -> tuple[FriedmanSummary | None, str]:
    """Friedman + Nemenyi over data sets on each model's MAE (its non-leaky row with the most seeds).

    Only models measured on every data set enter (a complete block design); the note says who was left out,
    or why the analysis was skipped (it needs >= 2 data sets and >= 3 such models).
    """
    best: dict[tuple[str, str], Row] = {}
    for row in rows:
        if row.status != "ok" or row.source != "measured" or row.mae_mean is None:
            continue
        if FLAG_LEAKY in row.flags or FLAG_OTHER_SPLIT in row.flags:
            continue
        key = (row.dataset, row.model)
        if key not in best or len(row.cells) > len(best[key].cells):
            best[key] = row
    datasets = sorted({d for d, _ in best})
    all_models = sorted({m for _, m in best})
    models = [m for m in all_models if all((d, m) in best for d in datasets)]
    excluded = [m for m in all_models if m not in models]
    if len(datasets) < 2 or len(models) < 3:
        note = (
            f"Friedman test and critical-difference diagram skipped: they need >= 2 data sets and >= 3 models "
            f"measured on all of them; the results have {len(datasets)} data set(s) and {len(models)} such model(s)."
        )
        return None, note
    mae = [[float(best[(d, m)].mae_mean or 0.0) for m in models] for d in datasets]  # mae_mean is set: filtered
    result = stats.friedman(np.array(mae))
    cd = stats.nemenyi_cd(len(models), len(datasets), alpha)
    summary = FriedmanSummary(
        datasets,
        models,
        mae,
        result,
        cd,
        stats.nemenyi_cliques(result.avg_ranks, cd),
        alpha,
        excluded,
    )
    if not np.isfinite(result.pvalue):
        verdict = "undefined: every model ties on every data set"
    else:
        verdict = "reject" if result.pvalue < alpha else "do not reject"
    note = (
        f"Friedman test over {len(datasets)} data sets and {len(models)} models: chi2 = {result.statistic:.2f}, "
        f"p = {result.pvalue:.3g} ({verdict} 'all models alike' at alpha {alpha:g}); Nemenyi CD = {cd:.2f} ranks."
    )
    if excluded:
        note += f" Not on every data set, so left out: {', '.join(excluded)}."
    return summary, note


@dataclass
class Analysis:
    """Everything the statistics add to a leaderboard; rows carry their own interval, rank and group."""

    config: StatsConfig
    datasets: dict[str, DatasetComparison]
    friedman: FriedmanSummary | None
    friedman_note: str

    def legend(self) -> str:
        """One line on what the CI and group columns mean, shared by every format."""
        c = self.config
        method = CI_METHOD.format(unit="subjects where the test split has identities, else images")
        return (
            f"MAE CI: {c.level:.0%} interval of the MAE, {method}, {c.n_resamples} resamples. "
            "Group: rows sharing a number do not differ "
            f"significantly from that group's best row ({TEST_METHOD} on per-image absolute errors, Holm-corrected "
            f"over the table's pairs, alpha {c.alpha:g}); every row in group 1 ties for best, and rows of one "
            "group must not be read as ranked."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "datasets": {
                name: {
                    "summary": comp.summary(self.config.alpha),
                    "groups": comp.groups,
                    "pairs": [p.to_dict() for p in comp.pairs],
                    "refused": comp.refused,
                }
                for name, comp in self.datasets.items()
            },
            "friedman": self.friedman.to_dict() if self.friedman else None,
            "friedman_note": self.friedman_note,
        }


def analyse(rows: list[Row], cfg: StatsConfig | None = None) -> Analysis:
    """Fill each measured row's interval, rank and group; compare every pair per data set; test across them."""
    cfg = cfg or StatsConfig()
    by_dataset: dict[str, list[Row]] = {}
    for row in rows:
        if row.status == "ok" and row.source == "measured":
            by_dataset.setdefault(row.table or row.dataset, []).append(row)  # another test split: its own table
    comparisons = {}
    for dataset, members in by_dataset.items():
        for row in members:
            row.interval = row_interval(row.cells, _interval_key(row), cfg)
        # Ranked and compared: rows whose numbers can be trusted and paired. A leaky row's MAE is optimistic
        # and a row without predictions cannot be paired; they keep their place in the table, with no rank.
        ranked = sorted(
            (r for r in members if FLAG_LEAKY not in r.flags and r.interval is not None),
            key=lambda r: (r.mae_mean, r.model),
        )
        for rank, row in enumerate(ranked, start=1):
            row.rank = rank
        comp = compare_dataset(dataset, ranked, cfg)
        for row in ranked:
            row.group = comp.groups.get(row_label(row))
        comparisons[dataset] = comp
    friedman, note = friedman_over_datasets(rows, cfg.alpha)
    return Analysis(cfg, comparisons, friedman, note)
