"""Age-assurance statistics on toy sets whose answers are computed by hand (agebench.report.assurance_stats)."""

from __future__ import annotations

import numpy as np
import pytest

from agebench.report import assurance_stats as A

BOOT = A.Boot(n_resamples=400)


def _toy() -> A.TestSet:
    # ages on the gate's edges: T = 18, B = 0 -> fpr over [13, 18), fnr over [18, 28)
    ages = [13.0, 14.5, 17.0, 17.99, 18.0, 18.0, 20.0, 27.99, 28.0, 12.99]
    preds = [18.0, 12.0, 17.99, 19.0, 18.0, 17.5, 30.0, 10.0, 5.0, 40.0]
    return A.TestSet(np.array(ages), np.array([preds]))


def test_a_gate_counts_estimates_exactly_at_t_plus_b_as_passing_and_uses_half_open_bands() -> None:
    g = A.gate(_toy(), 18, 0, BOOT, "t")
    # below = ages 13, 14.5, 17, 17.99 (12.99 is outside [13, 18)); passing: 18.0 (exactly T) and 19.0
    assert g["n_below"] == 4 and g["fpr"] == pytest.approx(2 / 4)
    # above = 18, 18, 20, 27.99 (28 is outside [18, 28)); failing: 17.5 and 10.0
    assert g["n_above"] == 4 and g["fnr"] == pytest.approx(2 / 4)
    assert g["fpr_ci"] is None and g["fnr_ci"] is None  # 4 images: fewer than MIN_UNITS, no interval
    assert g["fpr_by_year"]["13"] == {"n": 1, "fpr": 1.0}
    assert g["fpr_by_year"]["15"] == {"n": 0, "fpr": None}  # an empty year is None, never 0
    assert g["fpr_by_year"]["17"]["fpr"] == pytest.approx(0.5)
    buffered = A.gate(_toy(), 18, 1, BOOT, "t")  # passes need >= 19: only 19.0 among the minors
    assert buffered["fpr"] == pytest.approx(1 / 4) and buffered["fnr"] == pytest.approx(3 / 4)


def test_the_child_band_is_13_to_17_half_open_in_truth_and_estimate() -> None:
    ts = A.TestSet(
        np.array([13.0, 16.99, 17.0, 12.99, 8.0, 22.99, 23.0, 7.99]),
        np.array([[17.0, 13.0, 16.99, 13.0, 12.99, 14.0, 15.0, 15.0]]),
    )
    b = A.band(ts, BOOT, "b")
    assert b["tpr_n"] == 2 and b["tpr"] == pytest.approx(1 / 2)  # 17.0 estimated is outside the band
    assert b["fpr_below_n"] == 2 and b["fpr_below"] == pytest.approx(1 / 2)  # 12.99 -> 13.0 inside; 8 -> 12.99 not
    assert b["fpr_above_n"] == 2 and b["fpr_above"] == pytest.approx(1.0)  # 17 -> 16.99 and 22.99 -> 14
    empty = A.band(A.TestSet(np.array([40.0, 50.0]), np.array([[40.0, 50.0]])), BOOT, "e")
    assert empty["tpr"] is None and empty["tpr_n"] == 0 and empty["tpr_ci"] is None


def test_by_age_keys_are_years_to_24_then_five_year_bins() -> None:
    assert A.age_bin_keys(np.array([0.0, 0.99, 17.5, 24.99, 25.0, 29.99, 30.0, 61.0])) == [
        "0", "0", "17", "24", "25-29", "25-29", "30-34", "60-64",
    ]  # fmt: skip
    ts = A.TestSet(np.array([17.2, 17.8, 26.0]), np.array([[19.2, 16.8, 20.0], [17.2, 17.8, 26.0]]))
    rows = A.by_age(ts)
    assert list(rows) == ["17", "25-29"]
    # seed 1: errors +2, -1 -> MAE 1.5, bias 0.5; seed 2: zero errors; mean over seeds
    assert rows["17"] == {"n": 2, "mae": pytest.approx(0.75), "bias": pytest.approx(0.25)}
    assert rows["25-29"]["mae"] == pytest.approx(3.0) and rows["25-29"]["bias"] == pytest.approx(-3.0)


def test_group_figures_equal_a_direct_computation_and_tiny_groups_get_no_interval() -> None:
    rng = np.random.default_rng(3)
    n = 600
    subjects = tuple(f"s{i // 3}" for i in range(n))  # 3 images per person
    column = ["F" if (i // 3) % 2 else "M" for i in range(n)]
    column[:9] = ["X"] * 9  # 3 people: too few for an interval
    column[9:12] = [""] * 3  # unknown
    ages = rng.uniform(5, 70, n)
    preds = np.stack([ages + rng.normal(1.0, 4.0, n), ages + rng.normal(-0.5, 3.0, n)])
    ts = A.TestSet(ages, preds, subjects)
    out = A.column_groups(ts, column, (18,), 0, BOOT, "g")
    labels = np.array([c or "unknown" for c in column])
    for value in ("F", "M", "X", "unknown"):
        m = labels == value
        direct_mae = np.mean([np.abs(p[m] - ages[m]).mean() for p in preds])
        direct_bias = np.mean([(p[m] - ages[m]).mean() for p in preds])
        got = out["values"][value]
        assert got["mae"] == pytest.approx(direct_mae) and got["bias"] == pytest.approx(direct_bias)
        assert got["n"] == int(m.sum()) and got["n_subjects"] == len({subjects[i] for i in np.flatnonzero(m)})
    assert out["values"]["X"]["mae_ci"] is None and out["values"]["X"]["n_subjects"] == 3
    lo, hi = out["values"]["F"]["mae_ci"]
    assert lo < out["values"]["F"]["mae"] < hi
    assert out["gap"]["groups"] == ["F", "M"]  # X (tiny) and unknown are left out of the gap
    f, m_ = out["values"]["F"]["mae"], out["values"]["M"]["mae"]
    assert out["gap"]["mae_gap"] == pytest.approx(abs(f - m_))
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [("F", "M")]
    below = (ages >= 13) & (ages < 18) & (labels == "F")
    direct_fpr = np.mean([(p[below] >= 18).mean() for p in preds])
    assert out["values"]["F"]["gates"][0]["fpr"] == pytest.approx(direct_fpr)


def test_a_planted_group_offset_is_found_and_equal_groups_are_not() -> None:
    rng = np.random.default_rng(5)
    n = 900
    subjects = tuple(f"s{i // 3}" for i in range(n))
    column = [("a", "b", "c")[(i // 3) % 3] for i in range(n)]
    ages = rng.uniform(10, 60, n)
    noise = rng.normal(0, 3.0, n)
    offset = np.where(np.array(column) == "c", 8.0, 0.0)
    planted = A.column_groups(A.TestSet(ages, (ages + noise + offset)[None], subjects), column, (18,), 0, BOOT, "p")
    lo, _ = planted["values"]["c"]["bias_ci"]
    assert lo > 0 and lo > planted["values"]["a"]["bias_ci"][1] + 3
    assert all(p["p_holm"] < 0.01 for p in planted["pairs"] if "c" in (p["a"], p["b"]))
    fair = A.column_groups(A.TestSet(ages, (ages + noise)[None], subjects), column, (18,), 0, BOOT, "p")
    assert fair["gap"]["mae_gap_ci"][0] < 0.5  # the gap's interval reaches (nearly) 0 when groups are alike
    assert all(p["p_holm"] > 0.05 for p in fair["pairs"])


def test_permutation_p_of_identical_groups_is_one_and_of_separated_groups_minimal() -> None:
    same = (np.array([1.0, 2.0, 3.0]), np.ones(3))
    assert A.permutation_p((same, same), 999, np.random.default_rng(0)) == 1.0
    a = (np.arange(20.0), np.ones(20))
    b = (np.arange(20.0) + 100, np.ones(20))
    assert A.permutation_p((a, b), 999, np.random.default_rng(0)) == pytest.approx(1 / 1000)


def test_paired_differences_of_a_model_with_itself_are_zero_and_of_a_shift_have_the_right_sign() -> None:
    rng = np.random.default_rng(2)
    ages = rng.uniform(10, 30, 400)
    subjects = tuple(f"s{i // 2}" for i in range(400))
    a = A.TestSet(ages, (ages + rng.normal(0, 2, 400))[None], subjects)
    labels = {"g": np.array(["x", "y"] * 200, dtype=object)}
    same = A.paired_differences(a, a, labels, (18,), 0, BOOT, "c")
    assert same["gates"][0]["delta_fpr"] == 0 and same["gates"][0]["delta_fpr_ci"] == (0.0, 0.0)
    assert same["gaps"]["g"]["delta_gap"] == 0
    b = A.TestSet(ages, a.preds + 3.0, subjects)  # b passes more minors
    shifted = A.paired_differences(a, b, labels, (18,), 0, BOOT, "c")
    assert shifted["gates"][0]["delta_fpr"] < 0 and shifted["gates"][0]["delta_fpr_ci"][1] < 0


@pytest.mark.slow
def test_gate_rate_intervals_cover_the_true_rate_93_to_97_percent() -> None:
    """Coverage of the 95% interval of a rate of 0.1 over 2,000 images per band (acceptance of issue 22)."""
    rng = np.random.default_rng(11)
    runs, covered = 600, 0
    for r in range(runs):
        ages = rng.uniform(13, 18, 2000)  # all in [T - 5, T) for T = 18
        passes = rng.random(2000) < 0.1
        preds = np.where(passes, 20.0, 10.0)
        g = A.gate(A.TestSet(ages, preds[None]), 18, 0, A.Boot(n_resamples=1000, seed=r), "cov", per_year=False)
        lo, hi = g["fpr_ci"]
        covered += lo <= 0.1 <= hi
    assert 0.93 <= covered / runs <= 0.97
