"""Statistics for comparing age estimators: pure numpy/scipy functions, no file I/O, no training code.

Why a benchmark needs them: a test split of 1,000 faces only knows a model's MAE to about +-0.3 years, and a
seed is one draw of the training noise, so a leaderboard that ranks 6.09 above 6.16 without an interval ranks
noise. Every function here states its test, its assumptions and its source; the leaderboard only calls them.

Resampling units: where identities are known, a person's images are not independent (same face, same lighting,
similar errors), so the unit of resampling is the subject (a cluster bootstrap, Field & Welsh 2007); otherwise the
image. Seeds are a second level: the quantity estimated is the expected MAE of the training *procedure*, so
seeds are resampled first, then units within each drawn seed (a two-level bootstrap, Davison & Hinkley 1997,
sec. 3.8). Every estimate is "mean over seeds of the per-seed mean", the same number the leaderboard prints.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# One seed's data, clustered: (sums [C, m] of the m per-image values over each of C units, unit sizes [C]).
Clustered = tuple[np.ndarray, np.ndarray]
_CHUNK_ELEMENTS = 1 << 22  # resamples x units per chunk: bounds memory at ~32 MB whatever the test-set size


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator fixed by (seed, key): a row's interval does not change when other rows are added."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def cluster_sums(values: np.ndarray, groups: Sequence[Hashable] | None = None) -> Clustered:
    """Sum per-image ``values`` ([n] or [n, m]) over resampling units: ``groups[i]`` is image i's subject.

    ``groups`` None makes every image its own unit (the ordinary bootstrap); an empty or None label inside
    ``groups`` makes that image a unit of its own (an image whose identity is unknown).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    n = len(values)
    if groups is None:
        return values.copy(), np.ones(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} values")
    codes: dict[Hashable, int] = {}
    index = np.empty(n, dtype=np.int64)
    for i, g in enumerate(groups):
        index[i] = codes.setdefault(("image", i) if g in (None, "") else ("group", g), len(codes))
    sums = np.zeros((len(codes), values.shape[1]))
    np.add.at(sums, index, values)
    return sums, np.bincount(index, minlength=len(codes)).astype(np.float64)


def point_estimate(seeds: Sequence[Clustered]) -> np.ndarray:
    """Mean over seeds of each seed's per-image mean ([m]): e.g. the MAE averaged over seeds."""
    return np.mean([s.sum(axis=0) / c.sum() for s, c in seeds], axis=0)


def _resample_counts(rng: np.random.Generator, n_units: int, size: int) -> np.ndarray:
    """[size, n_units] counts: how often each unit is drawn in each of ``size`` resamples of n_units units."""
    draws = rng.integers(0, n_units, size=(size, n_units))
    offsets = (np.arange(size) * n_units)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=size * n_units).reshape(size, n_units).astype(np.float64)


def bootstrap_distribution(seeds: Sequence[Clustered], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Two-level bootstrap of the mean over seeds of a per-seed mean: [n_resamples, m] replicates.

    Each replicate draws S seeds with replacement from the S given, then, for each drawn seed, its units with
    replacement; a seed's statistic is (sum of drawn unit sums) / (number of drawn images), the ratio estimator
    of a cluster bootstrap. With one seed and one image per unit this is the ordinary bootstrap of a mean
    (Efron & Tibshirani 1993, ch. 6). scipy.stats.bootstrap resamples one flat sample only, so the two levels
    are written here; a test checks that the one-seed case matches scipy's percentile interval.
    """
    if not seeds:
        raise ValueError("no seeds to resample")
    n_seeds, m = len(seeds), seeds[0][0].shape[1]
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds)) if n_seeds > 1 else np.zeros((n_resamples, 1), int)
    per_seed = np.empty((n_resamples, n_seeds, m))
    for position in range(n_seeds):
        for s, (sums, counts) in enumerate(seeds):
            rows = np.flatnonzero(picks[:, position] == s)
            chunk = max(1, _CHUNK_ELEMENTS // len(counts))
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                weights = _resample_counts(rng, len(counts), len(part))
                per_seed[part, position] = (weights @ sums) / (weights @ counts)[:, None]
    return per_seed.mean(axis=1)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval, per statistic (arrays of length m)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


def jackknife(seeds: Sequence[Clustered]) -> np.ndarray:
    """Leave-one-unit-out values of the mean over seeds of per-seed means ([units over all seeds, m]).

    Dropping unit c of seed s changes only seed s's mean, to (S_s - s_c) / (N_s - n_c). A seed with a single
    unit has no leave-one-out value and contributes none.
    """
    means = [sums.sum(axis=0) / counts.sum() for sums, counts in seeds]
    total = np.mean(means, axis=0)
    out = []
    for (sums, counts), mean in zip(seeds, means, strict=True):
        if len(counts) < 2:
            continue
        loo = (sums.sum(axis=0) - sums) / (counts.sum() - counts)[:, None]
        out.append(total + (loo - mean) / len(seeds))
    return np.concatenate(out) if out else np.empty((0, len(total)))


def bootstrap_interval(
    seeds: Sequence[Clustered], n_resamples: int = 2000, level: float = 0.95, rng: np.random.Generator | None = None
) -> Interval:
    """BCa interval (bias-corrected and accelerated; Efron 1987, JASA 82:171-185) of the two-level bootstrap.

    The plain percentile interval under-covers on skewed statistics (an MAE is a mean of a right-skewed
    |error|: 92.9-95.1% measured on 200-image test sets); BCa shifts the percentiles by the bootstrap's median
    bias z0 and a skewness term a from the leave-one-unit-out jackknife, as ``scipy.stats.bootstrap(...,
    method="BCa")`` does for one flat sample (a test checks that the one-seed case equals scipy's). Assumes
    units (subjects or images) are exchangeable within a seed and seeds are exchangeable draws of the
    training noise; with few seeds the seed level is crude (3 seeds resample into only 10 distinct sets).
    A degenerate bootstrap (every replicate equal, e.g. identical predictions) gives the point itself.
    """
    _check_level(level)
    boot = bootstrap_distribution(seeds, n_resamples, rng if rng is not None else np.random.default_rng(0))
    estimate = point_estimate(seeds)
    # z0: normal quantile of the share of replicates below the estimate (ties count half), as scipy computes it.
    share_below = ((boot < estimate).sum(axis=0) + (boot <= estimate).sum(axis=0)) / (2 * len(boot))
    jack = jackknife(seeds)
    spread = jack.mean(axis=0) - jack
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = sps.norm.ppf(share_below)
        accel = (spread**3).sum(axis=0) / (6 * ((spread**2).sum(axis=0)) ** 1.5)
    accel = np.where(np.isfinite(accel), accel, 0.0)
    tail = (1 - level) / 2
    low, high = np.empty_like(estimate), np.empty_like(estimate)
    for j in range(len(estimate)):
        if np.ptp(boot[:, j]) == 0:
            low[j] = high[j] = boot[0, j]
            continue
        quantiles = []
        for z in (sps.norm.ppf(tail), sps.norm.ppf(1 - tail)):
            shifted = z0[j] + (z0[j] + z) / (1 - accel[j] * (z0[j] + z))
            quantiles.append(float(np.nan_to_num(sps.norm.cdf(shifted), nan=0.5)))
        low[j], high[j] = np.percentile(boot[:, j], [100 * q for q in quantiles])
    return Interval(estimate, low, high, level)


def sign_flip_test(
    seeds: Sequence[Clustered], n_permutations: int = 9999, rng: np.random.Generator | None = None
) -> float:
    """Two-sided p-value of a paired sign-flip (randomisation) test that the mean difference is zero.

    Input: per seed, the per-unit sums of d_i = |error_a,i| - |error_b,i| (one column) and unit sizes. Under
    H0 the two models are exchangeable on every unit, so each unit's summed difference is as likely to carry
    either sign (Fisher 1935; Good 2005, ch. 3); units of different seeds flip independently. The statistic is
    the estimate itself, mean over seeds of sum(d) / n_seed, i.e. a weighted sum of unit sums. scipy's
    ``permutation_test`` with ``permutation_type="samples"`` on one sample is exactly this sign flip (exact when
    2**units <= n_permutations, else Monte Carlo with the +1 correction, so p >= 1 / (n_permutations + 1)).
    """
    weighted = np.concatenate([sums[:, 0] / (len(seeds) * counts.sum()) for sums, counts in seeds])
    result = sps.permutation_test(
        (weighted,),
        lambda x, axis: np.sum(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_permutations,
        alternative="two-sided",
        rng=rng if rng is not None else np.random.default_rng(0),
        batch=max(1, _CHUNK_ELEMENTS // max(len(weighted), 1)),
    )
    return float(min(1.0, result.pvalue))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65-70): family-wise error <= alpha.

    Sort ascending, multiply the i-th smallest (0-based) by (m - i), take the running maximum, cap at 1.
    Valid under any dependence between the tests (here: pairs that share a model). scipy has no Holm.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def rank_groups(adjusted_p: np.ndarray, alpha: float) -> list[int | None]:
    """Rank groups of rows sorted best first, from a symmetric matrix of adjusted pairwise p-values.

    Group 1 is the best row and every row not significantly different from it (adjusted p >= alpha); the best
    row not yet grouped then leads group 2 with the remaining rows that tie with it, and so on. A row that
    could not be compared with its would-be leader (NaN p: another test set) gets None. Pairwise tests are not
    transitive, so group 2 may hold a row whose MAE is below one in group 1's tail: the groups answer "does this
    row differ from the leader", which is the question a leaderboard's reader asks.
    """
    n = len(adjusted_p)
    groups: list[int | None] = [None] * n
    excluded = [False] * n
    group = 0
    for leader in range(n):
        if groups[leader] is not None or excluded[leader]:
            continue
        group += 1
        groups[leader] = group
        for j in range(leader + 1, n):
            if groups[j] is not None or excluded[j]:
                continue
            p = adjusted_p[leader, j]
            if np.isnan(p):
                excluded[j] = True
            elif p >= alpha:
                groups[j] = group
    return groups


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's test over N data sets (blocks) and k models, with the Iman-Davenport F correction."""

    statistic: float
    pvalue: float
    iman_davenport: float
    iman_davenport_p: float
    avg_ranks: np.ndarray  # [k], rank 1 = lowest error, ties get the average rank
    n_datasets: int
    n_models: int


def friedman(errors: np.ndarray) -> FriedmanResult:
    """Friedman's rank test that k models perform alike on N data sets (Friedman 1937; Demsar 2006, sec. 3.2.2).

    ``errors[i, j]``: model j's error (MAE) on data set i; lower ranks better. Assumes data sets are independent
    blocks and ranks are comparable across them. chi2_F comes from ``scipy.stats.friedmanchisquare`` (with its
    tie correction); Iman & Davenport's (1980) F_F = (N - 1) chi2_F / (N (k - 1) - chi2_F), on (k - 1) and
    (k - 1)(N - 1) degrees of freedom, is less conservative and is the one Demsar recommends.
    """
    errors = np.asarray(errors, dtype=np.float64)
    n, k = errors.shape
    if k < 3 or n < 2:
        raise ValueError(f"Friedman's test needs >= 3 models and >= 2 data sets, got {k} and {n}")
    ranks = sps.rankdata(errors, axis=1)
    statistic, pvalue = sps.friedmanchisquare(*errors.T)
    denominator = n * (k - 1) - statistic
    f_f = (n - 1) * statistic / denominator if denominator > 0 else np.inf
    f_p = float(sps.f.sf(f_f, k - 1, (k - 1) * (n - 1))) if np.isfinite(f_f) else 0.0
    return FriedmanResult(float(statistic), float(pvalue), float(f_f), f_p, ranks.mean(axis=0), n, k)


def nemenyi_cd(n_models: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Nemenyi 1963; Demsar 2006, eq. 5 and Table 5a).

    CD = q_alpha * sqrt(k (k + 1) / (6 N)), with q_alpha the studentized range quantile for k groups and
    infinite degrees of freedom divided by sqrt(2) (Demsar's table: 2.343, 2.569, 2.728, 2.850 at alpha 0.05
    for k = 3..6). Two models differ when their average ranks differ by at least CD. scipy has the studentized
    range distribution but not the CD.
    """
    if n_models < 2 or n_datasets < 1:
        raise ValueError(f"need >= 2 models and >= 1 data set, got {n_models} and {n_datasets}")
    q = sps.studentized_range.ppf(1 - alpha, n_models, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(n_models * (n_models + 1) / (6 * n_datasets)))


def nemenyi_cliques(avg_ranks: Sequence[float], cd: float) -> list[tuple[int, ...]]:
    """Maximal runs of models (indices, best first) whose average ranks span less than ``cd``: the bars of a
    critical-difference diagram (Demsar 2006, Fig. 1). Single models and runs inside a longer run are left out."""
    order = [int(i) for i in np.argsort(np.asarray(avg_ranks), kind="stable")]
    ranks = [float(avg_ranks[i]) for i in order]
    cliques: list[tuple[int, ...]] = []
    last_end = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and ranks[end + 1] - ranks[start] < cd:
            end += 1
        if end > start and end > last_end:
            cliques.append(tuple(order[start : end + 1]))
            last_end = end
    return cliques


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
