"""Age assurance end to end on result files: demographic columns in predictions.csv, `agebench assurance`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agebench.data.manifest import load_manifest, write_manifest
from agebench.evaluate import attach_records, write_predictions
from agebench.report.results import load_predictions


def test_demographic_columns_travel_from_the_manifest_into_predictions_csv(tmp_path: Path) -> None:
    rows = [
        {"path": f"i{k}.jpg", "age": 10 + k, "subject_id": f"s{k // 2}", "split": "test", "gender": "MF"[k % 2],
         "skin_tone": ("dark", "", "light")[k % 3], "mask": f"m{k}.png"}
        for k in range(6)
    ]  # fmt: skip
    manifest = load_manifest(write_manifest(rows, tmp_path / "m.csv"), check_files=False, required_splits=("test",))
    assert manifest.demographic_columns == ("gender", "skin_tone")  # mask is not a demographic column
    records = manifest.split("test")
    pred = {"index": np.array([3, 0]), "path": ["i3.jpg", "i0.jpg"], "age": np.array([13.0, 10.0])}
    pred["pred"] = np.array([14.0, 9.5])
    write_predictions(tmp_path / "predictions.csv", attach_records(pred, manifest, records))
    back = load_predictions(tmp_path / "predictions.csv")
    assert back.subjects == ("s1", "s0")
    assert back.columns == {"gender": ("F", "M"), "skin_tone": ("dark", "dark")}


def _cell(root: Path, model: str, seed: int, offset_dark: float, rng_seed: int, adults_only: bool = False) -> Path:
    """A result cell with subjects, gender and skin_tone: the dark group's estimates are ``offset_dark`` too old."""
    import csv
    import json

    folder = root / "synth" / model / f"seed{seed}"
    folder.mkdir(parents=True)
    n = 600
    ages = np.round(np.random.default_rng(0).uniform(20 if adults_only else 6, 60, n), 1)  # one test split
    rng = np.random.default_rng(rng_seed)
    tone = [("dark", "medium", "light")[(i // 3) % 3] for i in range(n)]
    preds = ages + rng.normal(0, 2.5, n) + np.where(np.array(tone) == "dark", offset_dark, 0.0)
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "age", "pred", "subject_id", "gender", "skin_tone"])
        for i in range(n):
            w.writerow([f"img/{i}.jpg", f"{ages[i]:g}", f"{preds[i]:.6f}", f"s{i // 3}", "MF"[(i // 6) % 2], tone[i]])
    err = np.abs(np.round(preds, 6) - ages)
    metrics = {"schema_version": 1, "status": "ok", "model": model, "dataset": "synth", "seed": seed,
               "mae": float(err.mean()), "cs5": float((err <= 5).mean()), "n_test": n}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_assurance_cli_finds_a_planted_group_bias_and_compares_two_models(tmp_path: Path, capsys) -> None:
    import json

    from agebench.cli import main

    _cell(tmp_path, "convnext-atto", 0, 8.0, 1)
    _cell(tmp_path, "vit-atto", 0, 0.0, 2)
    args = ["assurance", str(tmp_path), "--resamples", "300", "--json"]
    assert main([*args, "--compare", "vit-atto"]) == 0
    records = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    planted, fair = records["convnext-atto"], records["vit-atto"]  # rows in leaderboard order (best MAE first)
    dark = planted["groups"]["skin_tone"]["dark"]
    others = [planted["groups"]["skin_tone"][v]["bias_ci"][1] for v in ("light", "medium")]
    assert dark["bias_ci"][0] > max(others) + 3 and dark["n_subjects"] == 67
    assert set(planted["groups"]) == {"gender", "skin_tone"}
    assert planted["gaps"]["skin_tone"]["mae_gap_ci"][0] > 3 > fair["gaps"]["skin_tone"]["mae_gap_ci"][0]
    gate = next(g for g in planted["gates"] if g["threshold"] == 18)
    assert {"fpr", "fpr_ci", "fnr", "fnr_ci", "n_below", "n_above", "buffer"} <= set(gate)
    assert list(planted["by_age"])[:2] == ["6", "7"] and {"tpr", "fpr_below", "fpr_above"} <= set(planted["band"])
    assert planted["compare"]["gaps"]["skin_tone"]["delta_gap_ci"][0] > 0  # the planted model's gap is larger
    assert "compare" not in fair

    assert main(["assurance", str(tmp_path), "--model", "vit-atto", "--resamples", "300"]) == 0
    text = capsys.readouterr().out
    assert "### by skin_tone" in text and "Challenge-25" in text and "| 17 |" in text


def test_a_set_without_minors_says_so_and_shows_n_a(tmp_path: Path, capsys) -> None:
    import json

    from agebench.cli import main

    _cell(tmp_path, "convnext-atto", 0, 0.0, 3, adults_only=True)
    assert main(["assurance", str(tmp_path), "--resamples", "200", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert any("no test image under 18" in n for n in record["notes"])
    assert record["challenge25"]["fpr"] is None and record["band"]["tpr"] is None
    assert main(["leaderboard", str(tmp_path), "--resamples", "200", "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "## Age assurance" in md and "| synth | convnext-atto | n/a |" in md
