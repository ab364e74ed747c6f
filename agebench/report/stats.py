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
# Paired differences closer to zero than this (times max(1, the data's scale in years)) are ties: sign_flip_test.
TIE_TOLERANCE = 1e-9
_CHUNK_ELEMENTS = 1 << 21  # resamples x units per chunk: about 70 MB at peak whatever the test-set size


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


def _check_shared(seeds: Sequence[Clustered]) -> None:
    sizes = seeds[0][1]
    if any(len(c) != len(sizes) or not np.array_equal(c, sizes) for _, c in seeds):
        raise ValueError("shared_units: every seed must have the same units, in the same order")


def bootstrap_distribution(
    seeds: Sequence[Clustered], n_resamples: int, rng: np.random.Generator, shared_units: bool = False
) -> np.ndarray:
    """Two-level bootstrap of the mean over seeds of a per-seed mean: [n_resamples, m] replicates.

    Each replicate draws S seeds with replacement from the S given, and units with replacement; a seed's
    statistic is (sum of drawn unit sums) / (number of drawn images), the ratio estimator of a cluster
    bootstrap. ``shared_units``: every seed scored the same units (the same test split, same order), the usual
    case: one draw of units then serves every drawn seed of the replicate. Test-set sampling and training
    noise are crossed, not nested (Owen 2007, Ann. Appl. Stat. 1:412-436): drawing a face anew for each seed
    would treat its errors under two seeds as independent and shrink the test-set variance about S-fold.
    Without it each drawn seed gets its own draw (seeds tested on independent test sets). With one seed and
    one image per unit this is the ordinary bootstrap of a mean (Efron & Tibshirani 1993, ch. 6); scipy's
    ``bootstrap`` resamples one flat sample only, so the levels are written here.
    """
    if not seeds:
        raise ValueError("no seeds to resample")
    n_seeds, m = len(seeds), seeds[0][0].shape[1]
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds)) if n_seeds > 1 else np.zeros((n_resamples, 1), int)
    if shared_units:
        _check_shared(seeds)
        sizes = seeds[0][1]
        stacked = np.stack([sums for sums, _ in seeds])  # [S, C, m]
        out = np.empty((n_resamples, m))
        chunk = max(1, _CHUNK_ELEMENTS // len(sizes))
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            weights = _resample_counts(rng, len(sizes), stop - start)  # [b, C], shared by the seeds
            per_seed = np.matmul(weights[None], stacked) / (weights @ sizes)[None, :, None]  # [S, b, m]
            drawn = per_seed[picks[start:stop].T, np.arange(stop - start)[None, :]]  # [S draws, b, m]
            out[start:stop] = drawn.mean(axis=0)
        return out
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


def jackknife(seeds: Sequence[Clustered], shared_units: bool = False) -> np.ndarray:
    """Leave-one-unit-out values of the mean over seeds of per-seed means ([units, m]).

    Shared units: unit c leaves every seed at once, each seed's mean becoming (S_s - s_sc) / (N - n_c).
    Otherwise dropping unit c of seed s changes only seed s's mean. Seeds with one unit contribute none.
    """
    means = [sums.sum(axis=0) / counts.sum() for sums, counts in seeds]
    total = np.mean(means, axis=0)
    if shared_units:
        sizes = seeds[0][1]
        if len(sizes) < 2:
            return np.empty((0, len(total)))
        loo = [(sums.sum(axis=0) - sums) / (sizes.sum() - sizes)[:, None] for sums, _ in seeds]
        return np.mean(loo, axis=0)
    out = []
    for (sums, counts), mean in zip(seeds, means, strict=True):
        if len(counts) < 2:
            continue
        loo = (sums.sum(axis=0) - sums) / (counts.sum() - counts)[:, None]
        out.append(total + (loo - mean) / len(seeds))
    return np.concatenate(out) if out else np.empty((0, len(total)))


def bootstrap_interval(
    seeds: Sequence[Clustered],
    n_resamples: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    shared_units: bool = False,
) -> Interval:
    """BCa interval (bias-corrected and accelerated; Efron 1987, JASA 82:171-185) of the two-level bootstrap.

    The plain percentile interval under-covers on skewed statistics (an MAE is a mean of a right-skewed
    |error|: 92.9-95.1% measured on 200-image test sets); BCa shifts the percentiles by the bootstrap's median
    bias z0 and a skewness term a from the leave-one-unit-out jackknife, as ``scipy.stats.bootstrap(...,
    method="BCa")`` does for one flat sample (a test checks that the one-seed case equals scipy's). Assumes
    units (subjects or images) are exchangeable and seeds are exchangeable draws of the training noise. With S
    seeds the seed level's variance is biased low by (S - 1) / S (3 seeds: by a third; they resample into only
    10 distinct sets): seed variance widens the interval, but 3 seeds measure it poorly. Where BCa is undefined
    (every replicate on one side of the estimate) the percentile interval is used; a degenerate bootstrap
    (every replicate equal, e.g. identical predictions) gives the point itself. Needs >= 2 units per seed.
    """
    _check_level(level)
    if any(len(counts) < 2 for _, counts in seeds):
        raise ValueError("a bootstrap interval needs at least 2 units (subjects or images) per seed")
    boot = bootstrap_distribution(seeds, n_resamples, rng or np.random.default_rng(0), shared_units)
    estimate = point_estimate(seeds)
    # z0: normal quantile of the share of replicates below the estimate (ties count half), as scipy computes it.
    share_below = ((boot < estimate).sum(axis=0) + (boot <= estimate).sum(axis=0)) / (2 * len(boot))
    jack = jackknife(seeds, shared_units)
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
        quantiles = [tail, 1 - tail]  # the percentile interval, where BCa is undefined
        if np.isfinite(z0[j]):
            z = sps.norm.ppf(quantiles)
            quantiles = sps.norm.cdf(z0[j] + (z0[j] + z) / (1 - accel[j] * (z0[j] + z))).tolist()
        low[j], high[j] = np.percentile(boot[:, j], [100 * q for q in quantiles])
    return Interval(estimate, low, high, level)


def sign_flip_test(
    seeds: Sequence[Clustered],
    n_permutations: int = 9999,
    rng: np.random.Generator | None = None,
    shared_units: bool = False,
) -> float:
    """Two-sided p-value of a paired sign-flip (randomisation) test that the mean difference is zero.

    Input: per seed, the per-unit sums of d_i = |error_a,i| - |error_b,i| (one column) and unit sizes. Under
    H0 the two models are exchangeable on every unit, so each unit's summed difference is as likely to carry
    either sign (Fisher 1935; Good 2005, ch. 3). The statistic is the estimate itself, mean over seeds of
    sum(d) / n_seed, a weighted sum of unit sums. With ``shared_units`` a unit's differences are first summed
    over the seeds and flip together (a face is one observation however many seeds scored it); otherwise
    units of different seeds flip independently. scipy's ``permutation_test`` with
    ``permutation_type="samples"`` on one sample is exactly this sign flip (exact when 2**units <=
    n_permutations, else Monte Carlo with the +1 correction, so p >= 1 / (n_permutations + 1)).

    Ties to rounding: a difference that is zero but for floating-point residue counts as zero. Two models whose
    errors cancel within every subject give unit sums of about 1e-15, not 0, and left alone that residue decides
    which sign patterns reach |observed| (p about 0.5-0.8 where it must be 1). So unit means |sum / size| below
    ``TIE_TOLERANCE * max(1, scale)`` are set to exactly 0, scale being the largest unit mean |difference| in
    years, and the statistic (in years) is rounded to that same step before scipy compares |statistic| >=
    |observed|; differences of 1e-9 years are far below anything an age estimate resolves.
    """
    scale = max((float(np.max(np.abs(s[:, 0] / c), initial=0.0)) for s, c in seeds), default=0.0)
    if not np.isfinite(scale):
        raise ValueError("differences must be finite")
    step = TIE_TOLERANCE * max(1.0, scale)
    weighted_per_seed = [
        np.where(np.abs(sums[:, 0] / counts) <= step, 0.0, sums[:, 0]) / (len(seeds) * counts.sum())
        for sums, counts in seeds
    ]
    if shared_units:
        _check_shared(seeds)
        weighted = np.sum(weighted_per_seed, axis=0)
    else:
        weighted = np.concatenate(weighted_per_seed)
    if not np.all(np.isfinite(weighted)):
        raise ValueError("differences must be finite")
    result = sps.permutation_test(
        (weighted,),
        lambda x, axis: np.round(np.sum(x, axis=axis) / step) * step,
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


def rank_groups(adjusted_p: np.ndarray, delta: np.ndarray, alpha: float) -> list[int | None]:
    """Rank groups of rows sorted best first, from symmetric adjusted pairwise p-values and differences.

    ``delta[i, j]`` is MAE_i - MAE_j over the pair's common seeds. Group 1 is the best row and every row not
    significantly different from it (adjusted p >= alpha); the best row not yet grouped then leads group 2
    with the remaining rows that tie with it, and so on. None: a row that could not be compared with its
    would-be leader (NaN p: another test set), or one significantly *better* than its leader (rows are sorted
    on all their seeds, pairs use common seeds only, so the two orders can disagree). Pairwise tests are not
    transitive: the groups answer "does this row differ from its leader", the question a reader asks.
    """
    n = len(adjusted_p)
    groups: list[int | None] = [None] * n
    settled = [False] * n
    group = 0
    for leader in range(n):
        if settled[leader]:
            continue
        group += 1
        groups[leader], settled[leader] = group, True
        for j in range(leader + 1, n):
            if settled[j]:
                continue
            p = adjusted_p[leader, j]
            if np.isnan(p) or (p < alpha and delta[leader, j] > 0):
                settled[j] = True  # not comparable with the leader, or better than it: no group
            elif p >= alpha:
                groups[j], settled[j] = group, True
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
    blocks and ranks are comparable across them. chi2_F and its p-value come from
    ``scipy.stats.friedmanchisquare`` (chi-square approximation with a tie correction: rough for N < 10 data
    sets, so read p as indicative there). Iman & Davenport's (1980) F_F = (N - 1) chi2_F / (N (k - 1) - chi2_F)
    on (k - 1) and (k - 1)(N - 1) degrees of freedom is reported beside it (Demsar prefers it); it is NaN where
    undefined (every data set ranks the models identically, or every model ties).
    """
    errors = np.asarray(errors, dtype=np.float64)
    n, k = errors.shape
    if k < 3 or n < 2:
        raise ValueError(f"Friedman's test needs >= 3 models and >= 2 data sets, got {k} and {n}")
    ranks = sps.rankdata(errors, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic, pvalue = sps.friedmanchisquare(*errors.T)
    denominator = n * (k - 1) - statistic
    f_f = (n - 1) * statistic / denominator if denominator > 0 else np.nan
    f_p = float(sps.f.sf(f_f, k - 1, (k - 1) * (n - 1))) if np.isfinite(f_f) else np.nan
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
