"""Statistics on leaderboards and `agebench compare`: intervals, paired tests, groups, Friedman, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from agebench.cli import main
from agebench.report import StatsConfig, build_leaderboard
from agebench.report import stats as S

N_IMAGES, N_SUBJECTS = 300, 60
FAST = StatsConfig(n_resamples=500, n_permutations=999)


def write_run(
    root: Path,
    dataset: str,
    model: str,
    seed: int,
    abs_err: np.ndarray,
    subjects: bool = True,
    manifest: str = "m1",
    age_offset: float = 0.0,
) -> Path:
    """A result cell whose predictions have exactly the absolute errors ``abs_err`` (signs alternate)."""
    folder = root / dataset / model / f"seed{seed}"
    folder.mkdir(parents=True)
    ages = 20.0 + age_offset + np.arange(len(abs_err)) % 50
    preds = ages + abs_err * np.where(np.arange(len(abs_err)) % 2, 1.0, -1.0)
    with open(folder / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "age", "pred"] + (["subject_id"] if subjects else []))
        for i, (a, p) in enumerate(zip(ages, preds, strict=True)):
            writer.writerow([f"img/{i}.jpg", f"{a:g}", f"{p:.6f}"] + ([f"s{i % N_SUBJECTS}"] if subjects else []))
    err = np.abs(preds - ages)
    metrics = {
        "schema_version": 1,
        "status": "ok",
        "error": None,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "n_test": len(err),
        "mae": float(err.mean()),
        "cs": {str(k): float((err <= k).mean()) for k in range(1, 11)},
        "cs5": float((err <= 5).mean()),
        "latency_ms": 5.0,
        "params": 1_000_000,
        "provenance": {"manifest_sha256": manifest, "device": "cpu"},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def base_errors(seed: int = 0) -> np.ndarray:
    return np.round(np.abs(np.random.default_rng(seed).normal(0, 5, N_IMAGES)), 3)


@pytest.fixture
def three_models(tmp_path: Path) -> Path:
    """close has best's errors on other images (same MAE, a tie); worse is 2 years worse on every image."""
    root = tmp_path / "R"
    err = base_errors()
    write_run(root, "synth", "best", 0, err)
    write_run(root, "synth", "close", 0, np.random.default_rng(1).permutation(err))
    write_run(root, "synth", "worse", 0, err + 2.0)
    return root


def test_rows_get_an_interval_around_their_mae_that_resamples_subjects(three_models: Path) -> None:
    built = build_leaderboard(three_models, None, "json", stats=FAST)
    for row in (r for r in built.rows if r.status == "ok"):
        assert row.interval is not None and row.interval.unit == "subjects"
        assert row.interval.mae[0] < row.mae_mean < row.interval.mae[1]
        assert row.interval.cs[5][0] <= row.cs5_mean <= row.interval.cs[5][1]
        assert row.interval.n_units == N_SUBJECTS


def test_without_subject_ids_the_interval_resamples_images_and_says_so(tmp_path: Path) -> None:
    write_run(tmp_path / "R", "utk", "a", 0, base_errors(), subjects=False)
    (row,) = [r for r in build_leaderboard(tmp_path / "R", None, "json", stats=FAST).rows if r.status == "ok"]
    assert row.interval.unit == "images" and row.interval.n_units == N_IMAGES
    assert row.to_dict()["ci_unit"] == "images"


def test_a_clearly_worse_model_gets_group_2_and_a_near_copy_ties_for_best(three_models: Path) -> None:
    built = build_leaderboard(three_models, None, "json", stats=FAST)
    groups = {r.model: (r.rank, r.group) for r in built.rows if r.status == "ok"}
    assert groups["worse"] == (3, 2)
    assert {groups["best"][1], groups["close"][1]} == {1}
    comp = built.analysis.datasets["synth"]
    assert "tie for best (group 1)" in comp.summary(0.05) and "1 row(s) are significantly worse" in comp.summary(0.05)
    raw = [p.p_value for p in comp.pairs]
    assert [p.p_holm for p in comp.pairs] == pytest.approx(S.holm(raw).tolist())
    (vs_worse,) = [p for p in comp.pairs if p.b == "worse" and p.a == comp.labels[0]]
    assert vs_worse.delta == pytest.approx(-2.0) and vs_worse.ci_high < 0 and vs_worse.p_holm < 0.01


def test_a_table_whose_rows_all_tie_reads_as_a_tie(tmp_path: Path) -> None:
    err = base_errors()
    for i, model in enumerate(("a", "b", "c")):  # the same errors on shuffled images: equal MAEs, no winner
        write_run(tmp_path / "R", "synth", model, 0, np.random.default_rng(i).permutation(err))
    built = build_leaderboard(tmp_path / "R", None, "md", stats=FAST)
    assert [r.group for r in built.rows if r.status == "ok"] == [1, 1, 1]
    assert "no row differs significantly from the best; the table does not rank them (a tie)" in built.text


def test_cells_on_different_test_sets_are_refused_with_the_reason(tmp_path: Path) -> None:
    root = tmp_path / "R"
    write_run(root, "synth", "a", 0, base_errors())
    write_run(root, "synth", "b", 0, base_errors(1), age_offset=1.0)  # the same images relabelled
    built = build_leaderboard(root, None, "json", stats=FAST)
    comp = built.analysis.datasets["synth"]
    assert comp.pairs == [] and "different ages" in comp.refused[0]["reason"]
    groups = sorted((r.group is None, r.group) for r in built.rows if r.status == "ok")
    assert groups == [(False, 1), (True, None)]
    doc = json.loads(built_text(root, "json"))
    assert doc["statistics"]["datasets"]["synth"]["refused"][0]["a"] in ("a", "b")


def test_manifest_bytes_do_not_decide_pairing_the_split_content_does(tmp_path: Path) -> None:
    # A manifest that gained a column hashes differently; its test split (paths and ages) is the same.
    root = tmp_path / "R"
    write_run(root, "synth", "a", 0, base_errors())
    write_run(root, "synth", "b", 0, base_errors(1), manifest="m2")
    comp = build_leaderboard(root, None, "json", stats=FAST).analysis.datasets["synth"]
    assert comp.refused == [] and len(comp.pairs) == 1


def built_text(root: Path, fmt: str) -> str:
    return build_leaderboard(root, None, fmt, stats=FAST).text or ""


def test_every_format_carries_intervals_groups_and_pairs(three_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    build_leaderboard(three_models, out, "all", stats=FAST)
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    measured = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["mae_ci_low"]) < float(r["mae_mean"]) < float(r["mae_ci_high"]) for r in measured)
    assert [r["group"] for r in measured] == ["1", "1", "2"]
    pairs = list(csv.DictReader(open(out / "pairwise.csv")))
    assert len(pairs) == 3 and all(0 < float(p["p_holm"]) <= 1 for p in pairs)
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["format_version"] == 2 and doc["statistics"]["config"]["n_resamples"] == 500
    assert len(doc["statistics"]["datasets"]["synth"]["pairs"]) == 3
    md = (out / "leaderboard.md").read_text()
    assert "## Paired comparisons" in md and "Holm-corrected" in md and "significantly worse" in md
    html = (out / "leaderboard.html").read_text()
    assert "Paired comparisons" in html and 'class="worse"' in html and 'class="better"' in html
    assert "skipped" in html  # one data set: no Friedman test, and the page says why


def test_two_data_sets_and_three_models_get_friedman_and_a_cd_diagram(tmp_path: Path) -> None:
    root = tmp_path / "R"
    err = base_errors()
    for d, dataset in enumerate(("afad", "morph2")):
        for shift, model in ((0.0, "a"), (0.5 + d, "b"), (1.0 + 2 * d, "c")):
            write_run(root, dataset, model, 0, err + shift)
    built = build_leaderboard(root, tmp_path / "out", "all", stats=FAST)
    f = built.analysis.friedman
    assert f is not None and f.models == ["a", "b", "c"] and f.result.avg_ranks.tolist() == [1.0, 2.0, 3.0]
    assert f.cd == pytest.approx(S.nemenyi_cd(3, 2, 0.05))
    png = (tmp_path / "out" / "plots" / "cd_diagram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![critical-difference diagram](plots/cd_diagram.png)" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_one_data_set_skips_friedman_with_a_one_line_note(three_models: Path) -> None:
    built = build_leaderboard(three_models, None, "json", stats=FAST)
    assert built.analysis.friedman is None
    assert built.analysis.friedman_note.startswith("Friedman test and critical-difference diagram skipped")


def test_compare_json_reports_the_paired_difference(three_models: Path, capsys) -> None:
    args = ["compare", str(three_models), "--dataset", "synth", "--a", "best", "--b", "worse", "--json"]
    assert main(args + ["--resamples", "500", "--permutations", "999"]) == 0
    record = json.loads(capsys.readouterr().out)
    keys = {"dataset", "a", "b", "n_images", "n_seeds", "mae_a", "mae_b", "delta_mae", "ci_low", "ci_high"}
    assert keys | {"p_value", "method"} <= set(record)
    assert record["n_images"] == N_IMAGES and record["n_seeds"] == 1
    assert record["delta_mae"] == pytest.approx(record["mae_a"] - record["mae_b"], abs=1e-5)
    assert record["delta_mae"] == pytest.approx(-2.0) and record["ci_high"] < 0 and record["p_value"] < 0.01
    assert "sign-flip" in record["method"]
    assert main(["compare", str(three_models), "--dataset", "synth", "--a", "best", "--b", "close"]) == 0
    assert "not significant" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("dataset", "a", "b", "message"),
    [
        ("nope", "best", "worse", "no data set 'nope'"),
        ("synth", "best", "nope", "no model 'nope'"),
        ("synth", "best", "other", "test sets differ"),
    ],
)
def test_compare_refuses_with_one_line_and_exit_2(three_models: Path, capsys, dataset, a, b, message) -> None:
    err = base_errors()
    write_run(three_models, "synth", "other", 0, np.concatenate([err[:-1], [1.0, 2.0]]))  # one image more
    assert main(["compare", str(three_models), "--dataset", dataset, "--a", a, "--b", b]) == 2
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and message in printed


def test_seed_to_seed_variance_widens_a_rows_interval(tmp_path: Path) -> None:
    root = tmp_path / "R"
    err = base_errors()
    for seed, shift in ((0, 0.0), (1, 0.8), (2, -0.7)):
        write_run(root, "one", "m", seed, err + shift) if seed == 0 else None
        write_run(root, "three", "m", seed, err + shift)
    rows = {r.dataset: r for r in build_leaderboard(root, None, "json", stats=FAST).rows if r.status == "ok"}
    width = {d: r.interval.mae[1] - r.interval.mae[0] for d, r in rows.items()}
    assert width["three"] > 1.5 * width["one"]
    assert rows["three"].mae_std is not None


def test_leaky_rows_and_rows_without_predictions_get_no_rank_or_group(three_models: Path) -> None:
    folder = write_run(three_models, "synth", "leaky", 0, base_errors() - 1.0)  # optimistic: best MAE
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "leaky_splits": True}))
    broken = write_run(three_models, "synth", "broken", 0, base_errors())
    (broken / "predictions.csv").write_text("path,age,pred\nimg/0.jpg,20,nan\n")
    rows = {r.model: r for r in build_leaderboard(three_models, None, "json", stats=FAST).rows if r.status == "ok"}
    assert (rows["leaky"].rank, rows["leaky"].group) == (None, None) and rows["leaky"].interval is not None
    assert (rows["broken"].rank, rows["broken"].group, rows["broken"].interval) == (None, None, None)
    assert "must be finite" in rows["broken"].warnings[0]
    assert [rows[m].group for m in ("best", "close", "worse")] == [1, 1, 2]  # the leader is the best clean row


def test_compare_refuses_models_without_a_common_seed(three_models: Path, capsys) -> None:
    write_run(three_models, "synth", "later", 5, base_errors())
    assert main(["compare", str(three_models), "--dataset", "synth", "--a", "best", "--b", "later"]) == 2
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and "share no seed" in printed


def test_images_listed_twice_are_refused_by_name(three_models: Path, capsys) -> None:
    csv_path = three_models / "synth" / "worse" / "seed0" / "predictions.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines + [lines[1]]) + "\n")
    assert main(["compare", str(three_models), "--dataset", "synth", "--a", "best", "--b", "worse"]) == 2
    assert "lists an image more than once" in capsys.readouterr().err


def test_split_key_is_the_content_of_the_test_split(tmp_path: Path) -> None:
    from agebench.report.results import load_predictions

    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("path,age,pred\nx.jpg,20,21\ny.jpg,30,29\n")
    # other order, other predictions, an extra column, a byte-order mark and CRLF: the same split
    b.write_text("\ufeffpath,age,pred,gender\r\ny.jpg,30.0,35,F\r\nx.jpg,20,10,M\r\n", encoding="utf-8")
    c.write_text("path,age,pred\nx.jpg,20,21\ny.jpg,31,29\n")  # one image relabelled
    pa, pb, pc = load_predictions(a), load_predictions(b), load_predictions(c)
    assert pa.split_key == pb.split_key != pc.split_key
    assert pb.columns == {"gender": ("F", "M")} and pa.columns == {}
