"""The statistics of agebench.report.stats on cases whose answer is known: exact values, scipy, textbook tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from agebench.report import stats as S


def _paired(errors_a: np.ndarray, errors_b: np.ndarray, groups=None) -> list[S.Clustered]:
    return [S.cluster_sums(np.abs(errors_a) - np.abs(errors_b), groups)]


def test_identical_predictions_give_delta_zero_p_one_and_an_interval_containing_zero() -> None:
    err = np.random.default_rng(0).normal(0, 5, 500)
    seeds = _paired(err, err)
    interval = S.bootstrap_interval(seeds, 2000, 0.95, np.random.default_rng(1))
    assert interval.estimate[0] == 0.0
    assert interval.low[0] <= 0.0 <= interval.high[0]
    assert S.sign_flip_test(seeds, 9999, np.random.default_rng(2)) == 1.0


def test_errors_one_year_smaller_everywhere_give_p_below_0001_and_an_interval_excluding_zero() -> None:
    err_b = 2.0 + np.abs(np.random.default_rng(0).normal(0, 5, 500))
    err_a = err_b - 1.0
    seeds = _paired(err_a, err_b)
    interval = S.bootstrap_interval(seeds, 2000, 0.95, np.random.default_rng(1))
    assert interval.estimate[0] == pytest.approx(-1.0)
    assert interval.high[0] < 0.0
    assert S.sign_flip_test(seeds, 9999, np.random.default_rng(2)) < 0.001


def test_small_samples_get_the_exact_sign_flip_distribution() -> None:
    d = np.array([1.0, 2.0, -0.5])  # 8 sign patterns; |sum| >= 2.5 in 4 of them
    assert S.sign_flip_test([S.cluster_sums(d)], 9999) == pytest.approx(0.5)


def test_one_seed_image_bootstrap_matches_scipys_bca_interval() -> None:
    err = np.abs(np.random.default_rng(3).normal(0, 5, 800))
    ours = S.bootstrap_interval([S.cluster_sums(err)], 2000, 0.95, np.random.default_rng(7))
    theirs = sps.bootstrap(
        (err,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7)
    ).confidence_interval
    assert ours.estimate[0] == pytest.approx(err.mean())
    # Same draws in the same order: the same interval; the tolerance allows another numpy summation order.
    assert ours.low[0] == pytest.approx(theirs.low, abs=1e-9) and ours.high[0] == pytest.approx(theirs.high, abs=1e-9)


def test_95_percent_mae_interval_covers_the_true_mae_93_to_97_percent_of_the_time() -> None:
    """1000 test sets of 200 images with errors ~ N(0, 5^2), so the true MAE is 5 sqrt(2 / pi).

    1000 sets, not 300: the simulation's own standard error is then 0.7 points, so the 93-97% band is about
    +-3 standard errors around 95% (with 300 sets one unlucky draw in twenty lands outside +-2.5 points).
    """
    rng = np.random.default_rng(2026)
    true_mae = 5 * np.sqrt(2 / np.pi)
    hits = 0
    for i in range(1000):
        abs_err = np.abs(rng.normal(0, 5, 200))
        interval = S.bootstrap_interval([S.cluster_sums(abs_err)], 1000, 0.95, np.random.default_rng(i))
        hits += interval.low[0] <= true_mae <= interval.high[0]
    assert 0.93 <= hits / 1000 <= 0.97


def test_subject_clusters_keep_coverage_where_an_image_bootstrap_falls_short() -> None:
    """Errors share a per-subject offset (same face, similar error): resampling images understates the spread.

    |u + e| with u ~ N(0, 3^2) per subject and e ~ N(0, 3^2) per image has mean sqrt(18) sqrt(2 / pi).
    """
    rng = np.random.default_rng(11)
    true_mae = np.sqrt(18) * np.sqrt(2 / np.pi)
    by_subject = by_image = 0
    widths = []
    for i in range(300):
        subject = np.repeat(np.arange(80), rng.integers(2, 8, 80))
        abs_err = np.abs(rng.normal(0, 3, 80)[subject] + rng.normal(0, 3, len(subject)))
        clustered = S.bootstrap_interval([S.cluster_sums(abs_err, subject.tolist())], 1000, 0.95, S.rng_for(i, "c"))
        flat = S.bootstrap_interval([S.cluster_sums(abs_err)], 1000, 0.95, S.rng_for(i, "i"))
        by_subject += clustered.low[0] <= true_mae <= clustered.high[0]
        by_image += flat.low[0] <= true_mae <= flat.high[0]
        widths.append((clustered.high - clustered.low)[0] / (flat.high - flat.low)[0])
    assert 0.93 <= by_subject / 300 <= 0.97
    assert by_image < by_subject - 15  # the image bootstrap misses noticeably more often
    assert np.median(widths) > 1.1


def test_seed_variance_widens_the_pooled_interval() -> None:
    """Three seeds whose MAEs differ by training noise: the two-level interval is wider than one seed's."""
    rng = np.random.default_rng(5)
    seeds = [S.cluster_sums(np.abs(rng.normal(0, 5, 1000)) + offset) for offset in (-0.5, 0.0, 0.6)]
    one = S.bootstrap_interval(seeds[:1], 2000, 0.95, np.random.default_rng(0))
    three = S.bootstrap_interval(seeds, 2000, 0.95, np.random.default_rng(0))
    assert three.estimate[0] == pytest.approx(np.mean([s.sum() / c.sum() for s, c in seeds]))
    assert (three.high - three.low)[0] > 1.5 * (one.high - one.low)[0]


def test_seeds_scored_on_the_same_faces_do_not_shrink_the_interval() -> None:
    """Three copies of one seed carry no more information about the test set than one: with shared units the
    interval keeps one seed's width; drawing faces anew per seed would shrink it about sqrt(3)-fold."""
    abs_err = np.abs(np.random.default_rng(8).normal(0, 5, 600))
    subjects = [f"s{i % 150}" for i in range(600)]
    seed = S.cluster_sums(abs_err, subjects)
    one = S.bootstrap_interval([seed], 2000, 0.95, np.random.default_rng(0))
    copies = S.bootstrap_interval([seed] * 3, 2000, 0.95, np.random.default_rng(0), shared_units=True)
    nested = S.bootstrap_interval([seed] * 3, 2000, 0.95, np.random.default_rng(0), shared_units=False)
    width = lambda iv: float((iv.high - iv.low)[0])  # noqa: E731
    assert width(copies) == pytest.approx(width(one), rel=0.1)
    assert width(nested) < 0.75 * width(one)
    d = S.cluster_sums(abs_err - np.abs(np.random.default_rng(9).normal(0, 5, 600)), subjects)
    p_one = S.sign_flip_test([d], 9999, np.random.default_rng(1))
    assert S.sign_flip_test([d] * 3, 9999, np.random.default_rng(1), shared_units=True) == pytest.approx(
        p_one, abs=0.02
    )
    with pytest.raises(ValueError, match="same units"):
        S.bootstrap_interval([seed, S.cluster_sums(abs_err)], 100, shared_units=True)


@pytest.mark.parametrize("shared", [True, False])
def test_jackknife_equals_recomputing_without_each_unit(shared: bool) -> None:
    rng = np.random.default_rng(12)
    groups = [f"s{i % 7}" for i in range(40)]
    seeds = [S.cluster_sums(np.abs(rng.normal(0, 5, (40, 2))), groups) for _ in range(3)]
    expected = []
    if shared:
        for c in range(7):
            keep = np.arange(7) != c
            expected.append(S.point_estimate([(sums[keep], counts[keep]) for sums, counts in seeds]))
    else:
        for s_index in range(len(seeds)):
            for c in range(7):
                keep = np.arange(7) != c
                dropped = [(x[keep], n[keep]) if k == s_index else (x, n) for k, (x, n) in enumerate(seeds)]
                expected.append(S.point_estimate(dropped))
    assert S.jackknife(seeds, shared_units=shared) == pytest.approx(np.array(expected))


def test_an_interval_needs_two_units() -> None:
    with pytest.raises(ValueError, match="at least 2 units"):
        S.bootstrap_interval([S.cluster_sums(np.array([3.0, 4.0]), ["a", "a"])], 100)


def test_cluster_sums_treat_missing_identities_as_their_own_unit() -> None:
    sums, counts = S.cluster_sums(np.array([1.0, 2.0, 3.0, 4.0]), ["a", "", "a", None])
    assert sums[:, 0].tolist() == [4.0, 2.0, 4.0] and counts.tolist() == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="3 group labels for 4 values"):
        S.cluster_sums(np.zeros(4), ["a", "b", "c"])


def test_bootstrap_is_deterministic_for_a_seed_and_key() -> None:
    seeds = [S.cluster_sums(np.abs(np.random.default_rng(0).normal(0, 5, 300)))]
    a = S.bootstrap_interval(seeds, 500, 0.9, S.rng_for(0, "synth/hybrid"))
    b = S.bootstrap_interval(seeds, 500, 0.9, S.rng_for(0, "synth/hybrid"))
    c = S.bootstrap_interval(seeds, 500, 0.9, S.rng_for(1, "synth/hybrid"))
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)
    with pytest.raises(ValueError, match="confidence level"):
        S.bootstrap_interval(seeds, 10, 95.0)


def test_holm_matches_the_step_down_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert S.holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # 0.5 x 2 caps at 1; the running max carries it
    assert S.holm([]).size == 0


def _deltas(maes: list[float]) -> np.ndarray:
    m = np.array(maes)
    return m[:, None] - m[None, :]


def test_rank_groups_make_a_tie_read_as_a_tie() -> None:
    nan = np.nan
    sorted_maes = _deltas([6.0, 6.1, 6.5])
    all_tie = np.array([[nan, 0.6, 0.4], [0.6, nan, 0.9], [0.4, 0.9, nan]])
    assert S.rank_groups(all_tie, sorted_maes, 0.05) == [1, 1, 1]
    third_worse = np.array([[nan, 0.6, 0.001], [0.6, nan, 0.01], [0.001, 0.01, nan]])
    assert S.rank_groups(third_worse, sorted_maes, 0.05) == [1, 1, 2]
    all_differ = np.array([[nan, 0.01, 0.001], [0.01, nan, 0.02], [0.001, 0.02, nan]])
    assert S.rank_groups(all_differ, sorted_maes, 0.05) == [1, 2, 3]


def test_rank_groups_leave_out_rows_they_cannot_place() -> None:
    nan = np.nan
    not_comparable = np.array([[nan, nan, 0.5], [nan, nan, nan], [0.5, nan, nan]])
    assert S.rank_groups(not_comparable, _deltas([6.0, 6.1, 6.5]), 0.05) == [1, None, 1]
    # Row 1 is significantly better than row 0 on their common seeds although sorted after it.
    better_than_leader = np.array([[nan, 0.001, 0.5], [0.001, nan, 0.5], [0.5, 0.5, nan]])
    assert S.rank_groups(better_than_leader, _deltas([6.0, 5.5, 6.2]), 0.05) == [1, None, 1]


def test_friedman_statistic_equals_scipy_and_the_textbook_formula() -> None:
    errors = np.random.default_rng(4).normal(5, 1, (6, 4))  # 6 data sets x 4 models, no ties
    result = S.friedman(errors)
    assert result.statistic == pytest.approx(sps.friedmanchisquare(*errors.T).statistic, abs=1e-12)
    n, k = errors.shape
    r = result.avg_ranks
    textbook = 12 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4)  # Demsar 2006, eq. 3
    assert result.statistic == pytest.approx(textbook, abs=1e-9)
    assert result.pvalue == pytest.approx(sps.chi2.sf(textbook, k - 1))
    f_f = (n - 1) * textbook / (n * (k - 1) - textbook)
    assert result.iman_davenport == pytest.approx(f_f)
    assert r.sum() == pytest.approx(k * (k + 1) / 2)


def test_friedman_f_is_undefined_where_every_data_set_ranks_alike() -> None:
    result = S.friedman(np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]]))  # chi2 = N (k - 1): F_F would divide by 0
    assert result.statistic == pytest.approx(4.0) and np.isnan(result.iman_davenport)
    assert np.isnan(result.iman_davenport_p) and 0 < result.pvalue < 1


def test_friedman_ranks_lowest_error_first_and_refuses_too_few_models() -> None:
    errors = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [2.0, 2.2, 2.1]])
    assert S.friedman(errors).avg_ranks.tolist() == pytest.approx([1.0, 7 / 3, 8 / 3])
    with pytest.raises(ValueError, match=">= 3 models"):
        S.friedman(errors[:, :2])


# Demsar (2006), Table 5a: q_0.05 for k = 2..10 models (studentized range / sqrt 2, infinite df).
DEMSAR_Q05 = {3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850}


@pytest.mark.parametrize("k", sorted(DEMSAR_Q05))
@pytest.mark.parametrize("n", [2, 4, 10, 14])
def test_nemenyi_critical_difference_equals_demsars_table(k: int, n: int) -> None:
    """CD = q sqrt(k (k + 1) / 6N) with the table's q to its 3 decimals (the table truncates: 2.3437 -> 2.343)."""
    scale = np.sqrt(k * (k + 1) / (6 * n))
    cd = S.nemenyi_cd(k, n, 0.05)
    assert abs(cd / scale - DEMSAR_Q05[k]) < 1e-3
    assert abs(cd - DEMSAR_Q05[k] * scale) < 1e-3


def test_nemenyi_critical_difference_of_demsars_worked_example() -> None:
    """Demsar 2006, sec. 3.2.2: four algorithms on 14 data sets, CD = 2.569 sqrt(4 * 5 / (6 * 14)) = 1.25."""
    assert round(S.nemenyi_cd(4, 14, 0.05), 2) == 1.25


def test_nemenyi_cliques_join_models_closer_than_cd() -> None:
    ranks = [1.2, 3.9, 1.8, 2.4, 4.7]  # sorted: 0 (1.2), 2 (1.8), 3 (2.4), 1 (3.9), 4 (4.7)
    assert S.nemenyi_cliques(ranks, 1.3) == [(0, 2, 3), (1, 4)]
    assert S.nemenyi_cliques(ranks, 0.5) == []
    assert S.nemenyi_cliques(ranks, 10.0) == [(0, 2, 3, 1, 4)]
