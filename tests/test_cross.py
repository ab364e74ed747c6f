"""Cross-dataset evaluation end to end on two tiny synthetic styles: cells, predictions files, the matrix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import make_image_set

from agebench.bench.cross import overlap
from agebench.cli import main
from agebench.config import ConfigError
from agebench.data.manifest import load_manifest, write_manifest
from agebench.data.synthetic import generate
from agebench.evaluate import read_predictions

TINY = {
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "precision": "32-true", "log_every_n_steps": 1},
    "data": {"img_size": 32, "batch_size": 16, "num_workers": 0},
    "optim": {"lr": 1.0e-3},
    "profile": {"batch_size": 4, "warmup": 1, "iters": 1},
}
MODELS = ["convnext-atto", {"name": "vit-tiny", "model": {"kwargs": {"patch_size": 8, "depth": 1}}}]


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("styles")
    return {
        style: generate(root / style, n=40, seed=1, size=32, style=style, progress=False, cache_size=32, workers=1)
        for style in ("studio", "snapshot")
    }


def write_config(path: Path, styles: dict[str, Path], **extra) -> Path:
    datasets = {name: {"manifest": str(m)} for name, m in styles.items()}
    config = {"models": MODELS, "datasets": datasets, "seeds": [0], **TINY, **extra}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cells(config: Path, results: Path, n: int) -> None:
    for i in range(n):  # in this process: a subprocess per cell would cost a torch import each
        assert main(["bench", "--config", str(config), "--out", str(results), "--cell", str(i)]) == 0


def test_cross_matrix_in_every_format_with_the_diagonal_equal_to_the_cells(styles, tmp_path, capsys):
    results = tmp_path / "results"
    # First only studio-trained cells predict snapshot; then eval_on: all adds snapshot -> studio without retraining.
    first = write_config(tmp_path / "a.yaml", styles)
    cfg = yaml.safe_load(first.read_text())
    cfg["datasets"]["studio"]["eval_on"] = ["snapshot"]
    first.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_cells(first, results, 4)
    snap_cell = results / "snapshot" / "convnext-atto" / "seed0"
    before = json.loads((snap_cell / "metrics.json").read_text())
    assert "cross" not in before
    ckpt_time = (snap_cell / "checkpoints" / "best.ckpt").stat().st_mtime_ns

    second = write_config(tmp_path / "b.yaml", styles, eval_on="all")
    capsys.readouterr()
    assert main(["bench", "--config", str(second), "--out", str(results), "--list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count(" cross") == 2 and listing.count(" done") == 2
    run_cells(second, results, 4)
    after = json.loads((snap_cell / "metrics.json").read_text())
    assert (snap_cell / "checkpoints" / "best.ckpt").stat().st_mtime_ns == ckpt_time  # not retrained
    assert after["mae"] == before["mae"] and after["epochs"] == before["epochs"]
    assert list(after["cross"]) == ["studio"]

    # Every off-diagonal predictions file holds each target test image once, and its MAE is the recorded one.
    for train, target in (("studio", "snapshot"), ("snapshot", "studio")):
        test_paths = sorted(r.path for r in load_manifest(styles[target]).split("test"))
        for model in ("convnext-atto", "vit-tiny"):
            cell = results / train / model / "seed0"
            record = json.loads((cell / "metrics.json").read_text())["cross"][target]
            rows = list(read_predictions(cell / f"predictions.{target}.csv"))
            assert sorted(r[0] for r in rows) == test_paths and record["n_test"] == len(test_paths)
            with open(cell / f"predictions.{target}.csv") as fh:  # people, so the matrix resamples people
                header = next(csv.reader(fh))  # then the target's demographic columns (agebench 0.6)
                assert header[3:] == ["subject_id", "gender", "skin_tone"]
            err = np.abs(np.array([r[2] for r in rows]) - np.array([r[1] for r in rows]))
            assert record["mae"] == pytest.approx(err.mean(), abs=1e-6)
            assert record["overlap"] == {
                "shared_images": 0,
                "shared_subjects": 0,
                "same_root": False,
                "flagged": False,
            }

    board = tmp_path / "board"
    assert main(["leaderboard", str(results), "--out", str(board), "--resamples", "200"]) == 0
    with open(board / "leaderboard.csv", newline="") as fh:
        in_domain = {(r["dataset"], r["model"]): float(r["mae_mean"]) for r in csv.DictReader(fh)}
    with open(board / "matrix.csv", newline="") as fh:
        entries = list(csv.DictReader(fh))
    assert len(entries) == 8  # 2 models x 2 training sets x 2 test sets
    for e in entries:
        cell = json.loads((results / e["train"] / e["model"] / "seed0" / "metrics.json").read_text())
        if e["train"] == e["test"]:
            assert e["in_domain"] == "True"
            assert float(e["mae_mean"]) == pytest.approx(in_domain[(e["train"], e["model"])], abs=1e-6)
            assert float(e["mae_mean"]) == pytest.approx(cell["mae"], abs=1e-6)
        else:
            assert float(e["mae_mean"]) == pytest.approx(cell["cross"][e["test"]]["mae"], abs=1e-6)
            assert float(e["mae_ci_low"]) <= float(e["mae_mean"]) <= float(e["mae_ci_high"])
    doc = json.loads((board / "matrix.json").read_text())
    assert [m["model"] for m in doc["models"]] == ["convnext-atto", "vit-tiny"]
    assert all(m["train"] == ["snapshot", "studio"] == m["test"] for m in doc["models"])
    assert json.loads((board / "leaderboard.json").read_text())["cross_matrix"] == doc
    assert "Cross-dataset MAE" in (board / "matrix.md").read_text()
    assert "Cross-dataset MAE" in (board / "leaderboard.md").read_text()
    assert "Cross-dataset MAE" in (board / "leaderboard.html").read_text()
    assert (board / "plots" / "cross_matrix.png").stat().st_size > 1000

    capsys.readouterr()
    assert main(["leaderboard", str(results), "--matrix", "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "| train \\ test | snapshot | studio |" in printed and "*mean predictor*" in printed


def test_overlap_counts_shared_images_and_people_only_on_the_same_root(tmp_path):
    manifest = make_image_set(tmp_path / "a", n=24, subjects=6)
    base = load_manifest(manifest)
    # Another protocol over the same files: the splits rotate, so the new test split was trained on before.
    rotate = {"train": "test", "test": "val", "val": "train"}
    rows = [{"path": r.path, "age": r.age, "subject_id": r.subject_id, "split": rotate[r.split]} for r in base.records]
    other = load_manifest(write_manifest(rows, tmp_path / "a" / "rotated.csv"))
    found = overlap(base, other)
    n_test = len(other.split("test"))
    assert found == {"shared_images": n_test, "shared_subjects": 4, "same_root": True, "flagged": True}
    assert overlap(base, base)["flagged"] is False  # the in-domain test split is disjoint from train and val
    copy = load_manifest(make_image_set(tmp_path / "b", n=24, subjects=6))  # same names, other files
    assert overlap(base, copy) == {"shared_images": 0, "shared_subjects": 0, "same_root": False, "flagged": False}

    # A test-only manifest (as CVPR24's FG-Net.json imports) is a valid target: only its test split is read.
    from agebench.bench.cross import target_datamodule

    test_only = [dict(r, split="test") for r in rows]
    path = write_manifest(test_only, tmp_path / "a" / "test_only.csv")
    dm = target_datamodule({"manifest": str(path), "img_size": 32, "batch_size": 8, "use_cache": False})
    assert sum(len(b["path"]) for b in dm.test_dataloader(shard=False)) == 24


def test_eval_on_errors_name_the_key(styles, tmp_path):
    from agebench.bench.plan import expand, load_bench_config

    bad = write_config(tmp_path / "bad.yaml", styles, eval_on=["nowhere"])
    with pytest.raises(ConfigError, match="eval_on: unknown data set.*nowhere"):
        expand(load_bench_config(bad), tmp_path)
    cfg = yaml.safe_load(bad.read_text())
    cfg.pop("eval_on")
    for ds in cfg["datasets"].values():
        ds["eval_only"] = True
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="nothing to train"):
        expand(load_bench_config(bad), tmp_path)
    # eval_only: a target that trains no cell; targets take the training cell's image size.
    cfg["datasets"]["studio"]["eval_only"] = False
    cfg["datasets"]["studio"]["eval_on"] = "all"
    cfg["datasets"]["snapshot"]["img_size"] = 64
    bad.write_text(yaml.safe_dump(cfg))
    cells = expand(load_bench_config(bad), tmp_path)
    assert {c.dataset for c in cells} == {"studio"}
    assert all(list(c.cross) == ["snapshot"] and c.cross["snapshot"]["img_size"] == 32 for c in cells)


def test_lopo_folds_run_as_cells_and_pool_into_one_row_per_model(tmp_path, capsys):
    """FG-NET-style leave-one-person-out: prepare --fold all, a bench over the folds, one pooled leaderboard row."""
    from agebench.data.prepare import prepare_folds

    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for s in range(1, 6):  # 5 people: every fold's validation subjects (the next of 5 seeded groups) exist
        for age in (3, 30, 51):
            path = raw / "FGNET" / "images" / f"{s:03d}A{age:02d}.JPG"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    prepare_folds("fgnet", raw, tmp_path / "lopo", protocol="lopo", face_detector="none", workers=1, progress=False)
    config = {
        "models": ["convnext-atto"],
        "datasets": {"fgnet": {"folds": str(tmp_path / "lopo" / "folds.json"), "root": str(raw)}},
        "seeds": [0],
        **TINY,
    }
    path = tmp_path / "lopo.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    run_cells(path, results, 4)  # fold 4 left out: the pooled row must say it is incomplete
    capsys.readouterr()
    assert main(["leaderboard", str(results), "--format", "csv", "--resamples", "200"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["dataset"], r["status"]) for r in rows] == [("fgnet", "invalid")]
    assert "4 of 5 folds finished; missing 4" in rows[0]["error"]

    run_cells(path, results, 5)
    capsys.readouterr()
    assert main(["leaderboard", str(results), "--format", "json", "--resamples", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["rows"]
    assert row["dataset"] == "fgnet" and row["status"] == "ok" and "folds pooled" in row["flags"]
    preds, fold_maes = [], []
    for k in range(5):
        cell = results / f"fgnet@fold{k:02d}" / "convnext-atto" / "seed0"
        rows_k = list(read_predictions(cell / "predictions.csv"))
        assert (
            len({load_manifest(tmp_path / "lopo" / f"fold{k:02d}" / "manifest.csv", raw).split("test")[0].subject_id})
            == 1
        )
        fold_maes.append(json.loads((cell / "metrics.json").read_text())["mae"])
        preds += rows_k
    assert row["n_test"] == 15 == len({p[0] for p in preds})  # every image once
    pooled = float(np.mean([abs(p[2] - p[1]) for p in preds]))
    assert row["mae_mean"] == pytest.approx(pooled, abs=1e-5)
    (cell,) = doc["cells"]
    assert cell["metrics"]["folds"]["fold_mean_mae"] == pytest.approx(np.mean(fold_maes))
    assert cell["metrics"]["tta"] == "none"
    assert row["mae_ci_low"] <= row["mae_mean"] <= row["mae_ci_high"]


def _fake_cell(
    root: Path, dataset: str, model: str, cross: dict, ages=(20.0, 30.0, 40.0), pred=(22.0, 29.0, 45.0), seed=0
):
    """A finished cell written by hand: metrics.json, predictions.csv and one predictions.<target>.csv each."""
    cell = root / dataset / model / f"seed{seed}"
    cell.mkdir(parents=True)
    lines = ["path,age,pred"] + [f"{dataset}/{i}.jpg,{a},{p}" for i, (a, p) in enumerate(zip(ages, pred, strict=True))]
    (cell / "predictions.csv").write_text("\n".join(lines) + "\n")
    mae = float(np.mean(np.abs(np.array(pred) - np.array(ages))))
    for target, record in cross.items():
        rows = ["path,age,pred"] + [f"{target}/{i}.jpg,{a},{a + record['mae']}" for i, a in enumerate(ages)]
        (cell / f"predictions.{target}.csv").write_text("\n".join(rows) + "\n")
    metrics = {"schema_version": 1, "status": "ok", "model": model, "dataset": dataset, "seed": seed, "mae": mae,
               "n_test": 3, "cs5": 1.0, "baseline_mae": 8.0, "cross": cross}  # fmt: skip
    (cell / "metrics.json").write_text(json.dumps(metrics))


def test_overlap_is_flagged_on_the_leaderboard_and_published_landmarks_join_the_matrix(tmp_path, capsys):
    results = tmp_path / "results"
    clean = {"flagged": False, "shared_images": 0, "shared_subjects": 0, "same_root": False}
    leak = {"flagged": True, "shared_images": 2, "shared_subjects": 1, "same_root": True}
    _fake_cell(results, "utkface", "convnext-atto", {"morph2": {"mae": 7.0, "n_test": 3, "overlap": clean}})
    _fake_cell(results, "morph2", "convnext-atto", {"utkface": {"mae": 6.0, "n_test": 3, "overlap": leak}})
    _fake_cell(results, "morph2", "convnext-atto", {}, seed=1)  # its cross evaluation has not run: same row
    assert main(["leaderboard", str(results), "--format", "csv", "--resamples", "200", "--reference", "none"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    found = {r["dataset"]: (r["flags"], r["seeds"]) for r in rows}
    assert found == {"morph2": ("cross-eval overlap", "0;1"), "utkface": ("", "0")}
    assert main(["leaderboard", str(results), "--matrix", "--resamples", "200"]) == 0
    text = capsys.readouterr().out
    assert "| morph2 | 2.67 ± 0.00 [1.33, 5.00] | 6.00 [6.00, 6.00] † |" in text
    assert "morph2 -> utkface: seed(s) [1] not evaluated" in text
    assert "shares 2 image(s) and 1 person(s)" in text
    assert "| ResNet-50 (random init) | utkface | morph2 | 7.22 |" in text
    assert main(["leaderboard", str(results), "--matrix", "--format", "json", "--resamples", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["published"]) == 6 and {e["overlap"] for e in doc["models"][0]["entries"]} == {True, False}


def test_a_target_is_redone_when_its_manifest_or_settings_change_and_dropped_when_unnamed(tmp_path):
    from agebench.bench.cell import dropped_targets, missing_targets, target_settings_hash
    from agebench.data.manifest import file_sha256

    manifest = make_image_set(tmp_path / "t", n=12)
    data = {"manifest": str(manifest), "root": None, "img_size": 32, "crop_pct": 1.0, "use_cache": True}
    done = {"manifest_sha256": file_sha256(manifest), "settings_sha256": target_settings_hash(data), "mae": 3.0}
    spec, record = {"cross": {"t": data}}, {"cross": {"t": done}}
    assert missing_targets(spec, record) == {} and dropped_targets(spec, record) == []
    assert missing_targets({"cross": {"t": data | {"batch_size": 99}}}, record) == {}  # not a prediction setting
    assert list(missing_targets({"cross": {"t": data | {"img_size": 48}}}, record)) == ["t"]
    manifest.write_text(manifest.read_text().replace("test", "val", 1))
    assert list(missing_targets(spec, record)) == ["t"]
    assert dropped_targets({"cross": {}}, record) == ["t"]


def test_a_target_keyed_on_its_test_split_stays_done_when_a_column_is_added(tmp_path):
    from agebench.bench.cell import missing_targets, target_settings_hash
    from agebench.data.manifest import load_manifest

    manifest = make_image_set(tmp_path / "t", n=12)
    data = {"manifest": str(manifest), "root": None, "img_size": 32, "crop_pct": 1.0, "use_cache": True}
    key = load_manifest(manifest, check_files=False).split_sha256("test")
    done = {"manifest_sha256": "old bytes", "test_split_sha256": key, "settings_sha256": target_settings_hash(data)}
    spec, record = {"cross": {"t": data}}, {"cross": {"t": done}}
    assert missing_targets(spec, record) == {}
    lines = manifest.read_text().splitlines()  # a demographic column, and the rows reordered: same test split
    rows = [f"{line},{'F' if i % 2 else 'M'}" for i, line in enumerate(lines[1:])]
    manifest.write_text("\n".join([lines[0] + ",gender", *reversed(rows)]) + "\n")
    assert load_manifest(manifest, check_files=False).extra_columns == ("gender",)
    assert missing_targets(spec, record) == {}
    manifest.write_text(manifest.read_text().replace(",test,", ",val,", 1))  # one test image fewer: redone
    assert list(missing_targets(spec, record)) == ["t"]
