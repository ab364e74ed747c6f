"""Age-assurance statistics: error by group, by year of age, at the thresholds age gates use. Pure numpy.

Why: a mean error of 5 years says nothing about whether a model lets 15-year-olds through an 18+ gate, or errs
twice as much for one group. NIST's FATE Age Estimation and Verification (NIST IR 8525) reports error by sex and
region of birth, Challenge-T false positive rates (a minor estimated T or older) and a child-safety band; these
functions compute the same figures from one test split's predictions, with subject-cluster bootstrap intervals
(the resampling helpers of agebench.report.stats).

Conventions: ages are real numbers and every band is half-open, [low, high). A face *passes* a gate with
threshold T and buffer B when its estimate is >= T + B (Challenge-C is T = 18, B = C - 18). Seeds: ``preds`` is
[S, n], every seed scoring the same images in the same order (the row's shared test split); a point figure is
the mean over seeds of the per-seed figure (the leaderboard's convention). A figure over no images is None,
never 0. A set with fewer than :data:`MIN_UNITS` resampling units (subjects where known, else images) gets its
point figure and n but no interval: a bootstrap over 3 people is not an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agebench.report import stats

MIN_UNITS = 10
UNKNOWN = "unknown"
DEFAULT_THRESHOLDS = (13, 16, 18, 21, 25)
CHILD_BAND = (13.0, 17.0)
BAND_BELOW = (8.0, 13.0)
BAND_ABOVE = (17.0, 23.0)
FPR_SPAN, FNR_SPAN = 5.0, 10.0  # fpr: true ages [T - 5, T); fnr: true ages [T, T + 10)
CS_K = 5.0


@dataclass(frozen=True)
class Boot:
    """Bootstrap settings shared by every figure; ``key`` fixes each figure's random stream (stats.rng_for)."""

    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class TestSet:
    """One row's test split: true ages [n], estimates [S, n] (S seeds, same images), subjects (None: unknown)."""

    ages: np.ndarray
    preds: np.ndarray
    subjects: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        preds = np.atleast_2d(np.asarray(self.preds, dtype=np.float64))
        object.__setattr__(self, "preds", preds)
        object.__setattr__(self, "ages", np.asarray(self.ages, dtype=np.float64))
        if preds.shape[1] != len(self.ages):
            raise ValueError(f"{preds.shape[1]} estimates per seed for {len(self.ages)} ages")
        if self.subjects is not None and len(self.subjects) != len(self.ages):
            raise ValueError(f"{len(self.subjects)} subjects for {len(self.ages)} ages")

    @property
    def has_subjects(self) -> bool:
        return self.subjects is not None and any(self.subjects)

    def units(self, mask: np.ndarray) -> list[Any]:
        """Resampling unit of each selected image: its subject, or the image itself where unknown."""
        idx = np.flatnonzero(mask)
        if not self.has_subjects:
            return [("image", int(i)) for i in idx]
        return [self.subjects[i] if self.subjects[i] else ("image", int(i)) for i in idx]  # type: ignore[index]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def mean_figures(ts: TestSet, mask: np.ndarray, values: np.ndarray, boot: Boot, key: str) -> dict[str, Any]:
    """Means over the images in ``mask`` of per-image ``values`` [S, n, m], with subject-cluster BCa intervals.

    Returns n (images), n_units (subjects or images), est [m] (None for no images) and ci [m] of (low, high) or
    None (fewer than MIN_UNITS units). Two-level bootstrap (seeds, then units shared by the seeds): stats.py.
    """
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    m = values.shape[2]
    if n == 0:
        return {"n": 0, "n_units": 0, "est": [None] * m, "ci": [None] * m}
    units = ts.units(mask)
    seeds = [stats.cluster_sums(v[mask], units) for v in values]
    n_units = len(seeds[0][1])
    est = stats.point_estimate(seeds)
    ci: list[tuple[float, float] | None] = [None] * m
    if n_units >= MIN_UNITS:
        iv = stats.bootstrap_interval(seeds, boot.n_resamples, boot.level, stats.rng_for(boot.seed, key), True)
        ci = [(float(lo), float(hi)) for lo, hi in zip(iv.low, iv.high, strict=True)]
    return {"n": n, "n_units": n_units, "est": [float(e) for e in est], "ci": ci}


def rate(ts: TestSet, mask: np.ndarray, hit: np.ndarray, boot: Boot, key: str) -> dict[str, Any]:
    """Share of the images in ``mask`` where ``hit`` [S, n] holds: {"rate", "ci", "n", "n_units"}."""
    fig = mean_figures(ts, mask, np.asarray(hit, dtype=np.float64)[:, :, None], boot, key)
    return {"rate": fig["est"][0], "ci": fig["ci"][0], "n": fig["n"], "n_units": fig["n_units"]}


def in_band(ages: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """True ages in the half-open band [low, high)."""
    return (ages >= band[0]) & (ages < band[1])


def accuracy(ts: TestSet, mask: np.ndarray, boot: Boot, key: str) -> dict[str, Any]:
    """n, n_subjects, MAE and bias (mean signed error, estimate - truth) with intervals, CS@5, over ``mask``."""
    err = ts.preds - ts.ages[None]
    values = np.stack([np.abs(err), err, (np.abs(err) <= CS_K).astype(np.float64)], axis=2)
    fig = mean_figures(ts, mask, values, boot, key)
    return {
        "n": fig["n"],
        "n_subjects": fig["n_units"] if ts.has_subjects else None,
        "n_units": fig["n_units"],
        "mae": fig["est"][0],
        "mae_ci": fig["ci"][0],
        "bias": fig["est"][1],
        "bias_ci": fig["ci"][1],
        "cs5": fig["est"][2],
    }


def age_bin_keys(ages: np.ndarray) -> list[str]:
    """Each age's by-year key: "0".."24" for [k, k + 1), then "25-29", "30-34", ... for [25 + 5j, 30 + 5j)."""
    out = []
    for a in np.asarray(ages, dtype=np.float64):
        k = int(math.floor(a))
        if k < 25:
            out.append(str(k))
        else:
            low = 25 + 5 * ((k - 25) // 5)
            out.append(f"{low}-{low + 4}")
    return out


def _bin_order(key: str) -> int:
    return int(key.split("-")[0])


def by_age(ts: TestSet) -> dict[str, dict[str, Any]]:
    """n, MAE and bias per year of true age (5-year bins from 25), keys in age order; bins without images absent."""
    keys = np.array(age_bin_keys(ts.ages))
    err = ts.preds - ts.ages[None]
    out = {}
    for key in sorted(set(keys.tolist()), key=_bin_order):
        mask = keys == key
        out[key] = {
            "n": int(mask.sum()),
            "mae": float(np.abs(err[:, mask]).mean(axis=1).mean()),
            "bias": float(err[:, mask].mean(axis=1).mean()),
        }
    return out


def gate(ts: TestSet, threshold: float, buffer: float, boot: Boot, key: str, per_year: bool = True) -> dict[str, Any]:
    """One age gate: a face passes when its estimate >= threshold + buffer.

    fpr: share of true ages in [T - 5, T) that pass (with per-year values for [k, k + 1)); fnr: share of true
    ages in [T, T + 10) that do not. Rates are means of per-image indicators, so their intervals are the
    subject-cluster bootstrap of a proportion.
    """
    passes = ts.preds >= threshold + buffer
    below = in_band(ts.ages, (threshold - FPR_SPAN, threshold))
    above = in_band(ts.ages, (threshold, threshold + FNR_SPAN))
    fpr = rate(ts, below, passes, boot, f"{key}/fpr")
    fnr = rate(ts, above, ~passes, boot, f"{key}/fnr")
    out: dict[str, Any] = {
        "threshold": threshold,
        "buffer": buffer,
        "fpr": fpr["rate"],
        "fpr_ci": fpr["ci"],
        "fnr": fnr["rate"],
        "fnr_ci": fnr["ci"],
        "n_below": fpr["n"],
        "n_above": fnr["n"],
        "n_subjects_below": fpr["n_units"] if ts.has_subjects else None,
        "n_subjects_above": fnr["n_units"] if ts.has_subjects else None,
    }
    if per_year:
        years = {}
        for k in range(int(math.ceil(threshold - FPR_SPAN)), int(math.ceil(threshold))):
            year = in_band(ts.ages, (float(k), float(k + 1)))
            n = int(year.sum())
            years[str(k)] = {"n": n, "fpr": float(passes[:, year].mean(axis=1).mean()) if n else None}
        out["fpr_by_year"] = years
    return out


def band(ts: TestSet, boot: Boot, key: str) -> dict[str, Any]:
    """The child-safety band [13, 17): tpr (true 13-16 estimated inside), fpr_below (true [8, 13) estimated
    inside) and fpr_above (true [17, 23) estimated inside), each with n and interval."""
    inside = in_band(ts.preds, CHILD_BAND)
    out: dict[str, Any] = {}
    for name, truth in (("tpr", CHILD_BAND), ("fpr_below", BAND_BELOW), ("fpr_above", BAND_ABOVE)):
        r = rate(ts, in_band(ts.ages, truth), inside, boot, f"{key}/{name}")
        out.update({name: r["rate"], f"{name}_ci": r["ci"], f"{name}_n": r["n"]})
    return out


def tradeoff(ts: TestSet, threshold: float, buffers: Sequence[float]) -> list[dict[str, Any]]:
    """fpr and fnr of one threshold as the buffer grows (points only): the curve a deployer picks B from."""
    below = in_band(ts.ages, (threshold - FPR_SPAN, threshold))
    above = in_band(ts.ages, (threshold, threshold + FNR_SPAN))
    out = []
    for b in buffers:
        passes = ts.preds >= threshold + b
        out.append(
            {
                "buffer": float(b),
                "fpr": float(passes[:, below].mean(axis=1).mean()) if below.any() else None,
                "fnr": float((~passes[:, above]).mean(axis=1).mean()) if above.any() else None,
            }
        )
    return out


# ---- groups: different people, so two-sample (stratified) resampling -------------------------------------------


def group_labels(values: Sequence[str]) -> np.ndarray:
    """Column values as labels; an empty value is :data:`UNKNOWN`."""
    return np.array([v.strip() if v and v.strip() else UNKNOWN for v in values], dtype=object)


def _unit_table(ts: TestSet, mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit sums of seed-averaged ``values`` [S, n] over ``mask`` and unit sizes (for group resampling)."""
    sums, sizes = stats.cluster_sums(values.mean(axis=0)[mask], ts.units(mask))
    return sums[:, 0], sizes


def _group_tables(ts: TestSet, labels: np.ndarray, groups: Sequence[str], values: np.ndarray) -> list[tuple]:
    return [_unit_table(ts, labels == g, values) for g in groups]


def _stratified(tables: list[tuple], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[n_resamples, G] group means, units resampled within each group (groups are different people)."""
    out = np.empty((n_resamples, len(tables)))
    for j, (sums, sizes) in enumerate(tables):
        counts = stats._resample_counts(rng, len(sizes), n_resamples)
        out[:, j] = (counts @ sums) / (counts @ sizes)
    return out


def _percentile(boot: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def gap(
    ts: TestSet, labels: np.ndarray, groups: Sequence[str], boot: Boot, key: str, values: np.ndarray | None = None
) -> dict[str, Any]:
    """max - min of the groups' mean ``values`` (default |error|: the MAE gap) with a percentile interval.

    The interval is that of the difference between the two groups that are highest and lowest in the data,
    MAE_max - MAE_min, subjects resampled within each group (a stratified bootstrap over seed-averaged errors:
    test-set variance only). Why not re-take max - min in every replicate: that spread is never below 0 and is
    biased upwards, so its interval excluded 0 for any groups and even excluded its own point (two equal groups:
    gap 0.00, interval [0.01, 1.24] on the planted-disparity run). With the pair fixed the interval can reach 0;
    choosing the pair from the data still favours a positive gap among 3+ groups, so read a lower bound near 0
    as "no clear gap". Only groups with at least MIN_UNITS units are compared; None with fewer than two.
    """
    values = np.abs(ts.preds - ts.ages[None]) if values is None else values
    if len(groups) < 2:
        return {"mae_gap": None, "mae_gap_ci": None, "groups": list(groups)}
    tables = _group_tables(ts, labels, groups, values)
    means = np.array([s.sum() / z.sum() for s, z in tables])
    hi, lo = int(np.argmax(means)), int(np.argmin(means))
    if hi == lo:  # every group equal: any other group is the "lowest"
        lo = 1 if hi == 0 else 0
    reps = _stratified([tables[hi], tables[lo]], boot.n_resamples, stats.rng_for(boot.seed, f"{key}/gap"))
    return {
        "mae_gap": float(means[hi] - means[lo]),
        "mae_gap_ci": _percentile(reps[:, 0] - reps[:, 1], boot.level),
        "groups": list(groups),
        "max_group": str(groups[hi]),
        "min_group": str(groups[lo]),
    }


def permutation_p(tables: tuple[tuple, tuple], n_permutations: int, rng: np.random.Generator) -> float:
    """Two-sided p of a two-sample permutation test that two groups' means are equal.

    Units (subjects) are the exchangeable items under H0: group labels are permuted across the pooled units,
    each group keeping its number of units; statistic mean_a - mean_b (ratio of summed errors to summed images).
    Monte Carlo with the +1 correction (Phipson & Smyth 2010), so p >= 1 / (n_permutations + 1).
    """
    (sa, za), (sb, zb) = tables
    sums, sizes = np.concatenate([sa, sb]), np.concatenate([za, zb])
    na = len(sa)
    observed = sa.sum() / za.sum() - sb.sum() / zb.sum()
    scale = max(1.0, float(np.max(np.abs(sums / sizes), initial=0.0)))
    hits = 0
    chunk = max(1, (1 << 20) // len(sums))
    done = 0
    while done < n_permutations:
        b = min(chunk, n_permutations - done)
        order = np.argsort(rng.random((b, len(sums))), axis=1)
        in_a = np.zeros((b, len(sums)))
        np.put_along_axis(in_a, order[:, :na], 1.0, axis=1)
        diff = (in_a @ sums) / (in_a @ sizes) - ((1 - in_a) @ sums) / ((1 - in_a) @ sizes)
        hits += int((np.abs(diff) >= abs(observed) - stats.TIE_TOLERANCE * scale).sum())
        done += b
    return (hits + 1) / (n_permutations + 1)


def pairwise(
    ts: TestSet, labels: np.ndarray, groups: Sequence[str], boot: Boot, key: str, n_permutations: int = 1999
) -> list[dict[str, Any]]:
    """Every pair of groups: MAE difference a - b, stratified-bootstrap percentile interval, permutation p and
    Holm-adjusted p over the column's pairs (stats.holm)."""
    values = np.abs(ts.preds - ts.ages[None])
    tables = _group_tables(ts, labels, groups, values)
    out = []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            pair_key = f"{key}/{groups[i]}|{groups[j]}"
            reps = _stratified([tables[i], tables[j]], boot.n_resamples, stats.rng_for(boot.seed, pair_key))
            a, b = (t[0].sum() / t[1].sum() for t in (tables[i], tables[j]))
            p = permutation_p((tables[i], tables[j]), n_permutations, stats.rng_for(boot.seed, pair_key + "/p"))
            out.append(
                {
                    "a": groups[i],
                    "b": groups[j],
                    "delta": float(a - b),
                    "delta_ci": _percentile(reps[:, 0] - reps[:, 1], boot.level),
                    "p": p,
                }
            )
    adjusted = stats.holm([r["p"] for r in out])
    for r, p in zip(out, adjusted, strict=True):
        r["p_holm"] = float(p)
    return out


def column_groups(
    ts: TestSet, column: Sequence[str], thresholds: Sequence[float], buffer: float, boot: Boot, key: str
) -> dict[str, Any]:
    """Per value of one demographic column: accuracy, gates and band; the MAE gap and pairwise tests over the
    values with at least MIN_UNITS units (``unknown`` never counts)."""
    labels = group_labels(column)
    values = sorted(set(labels.tolist()), key=lambda v: (v == UNKNOWN, v))
    per_value: dict[str, Any] = {}
    comparable = []
    for v in values:
        mask = labels == v
        acc = accuracy(ts, mask, boot, f"{key}/{v}")
        sub = _subset(ts, mask)
        acc["gates"] = [gate(sub, t, buffer, boot, f"{key}/{v}/gate{t:g}+{buffer:g}", False) for t in thresholds]
        acc["band"] = band(sub, boot, f"{key}/{v}/band")
        per_value[v] = acc
        if v != UNKNOWN and acc["n_units"] >= MIN_UNITS:
            comparable.append(v)
    return {
        "values": per_value,
        "gap": gap(ts, labels, comparable, boot, key),
        "pairs": pairwise(ts, labels, comparable, boot, key) if len(comparable) >= 2 else [],
    }


def _subset(ts: TestSet, mask: np.ndarray) -> TestSet:
    subjects = None if ts.subjects is None else tuple(s for s, m in zip(ts.subjects, mask, strict=True) if m)
    return TestSet(ts.ages[mask], ts.preds[:, mask], subjects)


# ---- two models on the same images: paired differences ---------------------------------------------------------


def paired_differences(
    a: TestSet,
    b: TestSet,
    labels: dict[str, np.ndarray],
    thresholds: Sequence[float],
    buffer: float,
    boot: Boot,
    key: str,
) -> dict[str, Any]:
    """Model a minus model b on the same images (same order, same ages): each gate's fpr and each column's MAE
    gap, with a paired bootstrap over subjects (one draw of people serves both models). Percentile intervals.

    ``labels``: column -> group labels of the images; a column's gap uses the groups both models can compare.
    """
    if not np.array_equal(a.ages, b.ages):
        raise ValueError("paired differences need the same images with the same ages")
    units = a.units(np.ones(len(a.ages), dtype=bool))
    codes: dict[Any, int] = {}
    unit_of = np.array([codes.setdefault(u, len(codes)) for u in units])
    n_units = len(codes)
    rng = stats.rng_for(boot.seed, key)
    weights = stats._resample_counts(rng, n_units, boot.n_resamples)[:, unit_of]  # [R, n] image weights
    out: dict[str, Any] = {"n_units": n_units, "gates": [], "gaps": {}}
    for t in thresholds:
        below = in_band(a.ages, (t - FPR_SPAN, t))
        if not below.any():
            out["gates"].append({"threshold": t, "buffer": buffer, "delta_fpr": None, "delta_fpr_ci": None})
            continue
        ha = (a.preds >= t + buffer).mean(axis=0) * below
        hb = (b.preds >= t + buffer).mean(axis=0) * below
        delta = (ha.sum() - hb.sum()) / below.sum()
        wb = weights @ below.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = (weights @ (ha - hb)) / wb
        reps = reps[np.isfinite(reps)]
        out["gates"].append(
            {
                "threshold": t,
                "buffer": buffer,
                "delta_fpr": float(delta),
                "delta_fpr_ci": _percentile(reps, boot.level) if n_units >= MIN_UNITS and len(reps) else None,
            }
        )
    ea, eb = np.abs(a.preds - a.ages).mean(axis=0), np.abs(b.preds - b.ages).mean(axis=0)  # mean over seeds
    for column, lab in labels.items():
        groups = [g for g in sorted(set(lab.tolist())) if g != UNKNOWN and len(set(unit_of[lab == g])) >= MIN_UNITS]
        if len(groups) < 2:
            out["gaps"][column] = {"delta_gap": None, "delta_gap_ci": None}
            continue
        masks = np.stack([lab == g for g in groups]).astype(np.float64)  # [G, n]
        point = [(masks @ e) / masks.sum(axis=1) for e in (ea, eb)]
        # per replicate: group means from the weighted images, for both models on the same drawn people
        wg = weights @ masks.T  # [R, G]
        with np.errstate(invalid="ignore", divide="ignore"):
            ga = (weights @ (masks * ea).T) / wg
            gb = (weights @ (masks * eb).T) / wg
        reps = (np.ptp(ga, axis=1) - np.ptp(gb, axis=1))[np.all(wg > 0, axis=1)]
        out["gaps"][column] = {
            "delta_gap": float(np.ptp(point[0]) - np.ptp(point[1])),
            "delta_gap_ci": _percentile(reps, boot.level) if len(reps) else None,
        }
    return out
