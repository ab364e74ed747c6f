"""Bad inputs a new user makes, command by command: each is one line naming the file, row or key, the
documented exit code, no traceback, and no partial output left behind.

The corpus runs the CLI in-process (no torch import per case). The heavier cases (bad images met while
training, a second bench on the same results) have their own tests below.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import make_image_set

from agebench.cli import main

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """``args`` with ``{W}`` for the workspace; ``says``: fragments the error line must hold;
    ``absent``: paths (under the workspace) that must not exist afterwards."""

    id: str
    args: list[str]
    says: list[str]
    code: int = 2
    absent: list[str] = field(default_factory=list)


FIT = ["fit", "--config", "{W}/fit.yaml"]
SYNTH10 = ["synth", "--out", "{W}/s", "--n", "10"]
PROFILE = ["profile", "--model", "convnext-atto", "--warmup", "0", "--iters", "1", "--batch-size", "2"]

CASES = [
    # synth
    Case("synth-n0", ["synth", "--out", "{W}/s", "--n", "0"], ["--n 0", "at least 10"], absent=["s"]),
    Case("synth-out-is-file", ["synth", "--out", "{W}/a_file", "--n", "10"], ["a_file", "not a folder"]),
    Case("synth-size8", ["synth", "--out", "{W}/s", "--n", "10", "--size", "8"], ["--size 8"], absent=["s"]),
    Case("synth-sigma", ["synth", "--out", "{W}/s", "--noise-sigma", "-1"], ["--noise-sigma"], absent=["s"]),
    Case(
        "synth-cache2", ["synth", "--out", "{W}/s", "--n", "10", "--cache-size", "2"], ["--cache-size 2"], absent=["s"]
    ),
    Case("synth-workers0", ["synth", "--out", "{W}/s", "--n", "10", "--workers", "0"], ["--workers 0"], absent=["s"]),
    Case("synth-bias-column", [*SYNTH10, "--apparent-bias", "race=x:8"], ["unknown column 'race'"], absent=["s"]),
    Case("synth-bias-value", [*SYNTH10, "--apparent-bias", "skin_tone=blue:8"], ["skin_tone 'blue'"], absent=["s"]),
    Case("synth-bias-years", [*SYNTH10, "--apparent-bias", "skin_tone=dark:old"], ["YEARS 'old'"], absent=["s"]),
    Case("synth-bias-split", [*SYNTH10, "--apparent-bias", "gender=F:3@dev"], ["split(s) dev"], absent=["s"]),
    # assurance
    Case("assurance-threshold", ["assurance", "{W}/empty", "--thresholds", "13,120"], ["120 is outside 1-100"]),
    Case("assurance-threshold0", ["assurance", "{W}/empty", "--thresholds", "0"], ["0 is outside 1-100"]),
    Case("assurance-buffer", ["assurance", "{W}/empty", "--buffer", "-1"], ["--buffer -1", ">= 0"]),
    Case("assurance-missing", ["assurance", "{W}/nowhere"], ["nowhere"]),
    # audit
    Case("audit-missing", ["audit", "{W}/nope.csv"], ["nope.csv", "not found"]),
    Case("audit-bad-age", ["audit", "{W}/bad_age.csv", "--root", "{W}/data"], ["bad_age.csv:3", "forty"]),
    Case("audit-bad-header", ["audit", "{W}/no_age.csv", "--root", "{W}/data"], ["no_age.csv", "age"]),
    Case("audit-workers0", ["audit", "{W}/data/manifest.csv", "--workers", "0"], ["--workers"]),
    Case(
        "audit-decode-bad-images",
        ["audit", "{W}/bad/manifest.csv", "--decode"],
        ["row 2", "row 3", "row 4", "empty", "truncated", "unreadable"],
        code=1,
    ),
    # prepare
    Case(
        "prepare-no-root", ["prepare", "utkface", "--root", "{W}/nowhere", "--out", "{W}/p"], ["nowhere"], absent=["p"]
    ),
    Case(
        "prepare-wrong-layout",
        ["prepare", "utkface", "--root", "{W}/empty", "--out", "{W}/p"],
        ["<age>_"],
        absent=["p"],
    ),
    Case(
        "prepare-margin",
        ["prepare", "utkface", "--root", "{W}/empty", "--out", "{W}/p", "--margin", "5"],
        ["--margin 5"],
        absent=["p"],
    ),
    # fit: files
    Case("fit-no-config", ["fit", "--config", "{W}/nope.yaml"], ["nope.yaml", "not found"]),
    Case("fit-bad-yaml", ["fit", "--config", "{W}/broken.yaml"], ["broken.yaml:2", "invalid YAML"]),
    Case("fit-no-manifest", [*FIT, "data.manifest={W}/nope.csv"], ["data.manifest", "nope.csv"], absent=["run"]),
    Case("fit-no-root", [*FIT, "data.root={W}/nowhere"], ["data.root"], absent=["run"]),
    Case("fit-out-dir-under-file", [*FIT, "out_dir={W}/a_file/run"], ["out_dir", "not a folder"]),
    Case("fit-out-dir-proc", [*FIT, "out_dir=/proc/agebench/run"], ["out_dir", "cannot be created"]),
    Case("fit-pretrained-path", [*FIT, "model.pretrained_path={W}/nope.pt"], ["model.pretrained_path"], absent=["run"]),
    Case("fit-weights-dir", [*FIT, "model.weights_dir={W}/nowhere"], ["model.weights_dir"], absent=["run"]),
    # fit: values
    Case("fit-unknown-key", [*FIT, "data.imgsize=32"], ["data.imgsize", "img_size"], absent=["run"]),
    Case("fit-img-size-0", [*FIT, "data.img_size=0"], ["data.img_size=0", ">= 1"], absent=["run"]),
    Case("fit-img-size-16", [*FIT, "data.img_size=16"], ["data.img_size=16", "at least 32 px"], absent=["run"]),
    Case("fit-img-size-16-hybrid", [*FIT, "data.img_size=16", "model.name=hybrid-atto"], ["32 px"], absent=["run"]),
    Case("fit-batch-0", [*FIT, "data.batch_size=0"], ["data.batch_size=0"], absent=["run"]),
    Case("fit-eval-batch", [*FIT, "data.eval_batch_size=-1"], ["data.eval_batch_size"], absent=["run"]),
    Case("fit-workers", [*FIT, "data.num_workers=-1"], ["data.num_workers"], absent=["run"]),
    Case("fit-crop-pct", [*FIT, "data.crop_pct=0"], ["data.crop_pct"], absent=["run"]),
    Case("fit-hflip", [*FIT, "data.augment.hflip=2"], ["data.augment.hflip"], absent=["run"]),
    Case("fit-on-bad-image", [*FIT, "data.on_bad_image=ignore"], ["data.on_bad_image", "skip"], absent=["run"]),
    Case("fit-precision", [*FIT, "trainer.precision=bf17"], ["trainer.precision", "bf16-mixed"], absent=["run"]),
    Case("fit-devices", [*FIT, "trainer.devices=0"], ["trainer.devices"], absent=["run"]),
    Case("fit-epochs-0", [*FIT, "trainer.max_epochs=0"], ["trainer.max_epochs"], absent=["run"]),
    Case("fit-epochs-text", [*FIT, "trainer.max_epochs=two"], ["trainer.max_epochs"], absent=["run"]),
    Case("fit-accelerator", [*FIT, "trainer.accelerator=gpu"], ["trainer.accelerator", "CUDA"], absent=["run"]),
    Case("fit-trainer-typo", [*FIT, "trainer.max_epoch=2"], ["trainer.max_epoch", "max_epochs"], absent=["run"]),
    Case("fit-strategy", [*FIT, "trainer.strategy=nonsense"], ["trainer", "nonsense"], absent=["run"]),
    Case("fit-lr", [*FIT, "optim.lr=0"], ["optim.lr"], absent=["run"]),
    Case("fit-betas", [*FIT, "optim.betas=[0.9,1.5]"], ["optim.betas[1]"], absent=["run"]),
    Case("fit-warmup", [*FIT, "optim.warmup_frac=2"], ["optim.warmup_frac"], absent=["run"]),
    Case("fit-loss", [*FIT, "optim.loss=l3"], ["optim.loss", "l1, mse"], absent=["run"]),
    Case("fit-loss-kwarg", [*FIT, "optim.loss_kwargs={q: 1}"], ["optim.loss", "q"], absent=["run"]),
    Case("fit-model", [*FIT, "model.name=resnet"], ["model.name", "convnext-atto"], absent=["run"]),
    Case("fit-dropout", [*FIT, "model.head_dropout=1.0"], ["model.head_dropout"], absent=["run"]),
    Case("fit-head", [*FIT, "model.head=nope"], ["model.head", "nope", "coral"], absent=["run"]),
    Case("fit-head-kwarg", [*FIT, "model.head={name: dldl, sigmaa: 2}"], ["dldl", "sigmaa"], absent=["run"]),
    Case("fit-age-range", [*FIT, "model.age_range=[60,10]"], ["model.age_range", "min_age < max_age"], absent=["run"]),
    Case("fit-logger", [*FIT, "logger.kind=neptune"], ["logger.kind", "csv"], absent=["run"]),
    Case("fit-seed", [*FIT, "seed=-1"], ["seed=-1"], absent=["run"]),
    Case("fit-pretrained-offline", [*FIT, "model.pretrained=true"], ["convnext_atto", "weights fetch"], absent=["run"]),
    # bench
    Case("bench-no-config", ["bench", "--config", "{W}/nope.yaml", "--out", "{W}/r"], ["nope.yaml"], absent=["r"]),
    Case("bench-unknown-model", ["bench", "--config", "{W}/bench.yaml", "--out", "{W}/r"], ["nope-net"], absent=["r"]),
    Case(
        "bench-img-size-16",
        ["bench", "--config", "{W}/bench.yaml", "--out", "{W}/r", "models=[convnext-atto]", "data.img_size=16"],
        ["cell d/convnext-atto/seed0", "data.img_size=16"],
        absent=["r"],
    ),
    Case(
        "bench-precision",
        ["bench", "--config", "{W}/bench.yaml", "--out", "{W}/r", "models=[convnext-atto]", "trainer.precision=bf17"],
        ["trainer.precision"],
        absent=["r"],
    ),
    Case(
        "bench-no-cell",
        ["bench", "--config", "{W}/bench.yaml", "--out", "{W}/r", "models=[convnext-atto]", "--cell", "9"],
        ["--cell", "no such cell"],
        absent=["r"],
    ),
    # profile
    Case("profile-img-size-0", [*PROFILE, "--img-size", "0"], ["--img-size 0"]),
    Case("profile-img-size-16", [*PROFILE, "--img-size", "16"], ["16 px", "at least 32 px"]),
    Case("profile-model", ["profile", "--model", "nope"], ["nope", "registered"]),
    Case("profile-cuda", [*PROFILE, "--device", "cuda"], ["--device cuda"]),
    Case("profile-batch-0", [*PROFILE, "--batch-size", "0"], ["--batch-size 0"]),
    Case("profile-precision", [*PROFILE, "--precision", "bf17"], ["--precision bf17"]),
    Case("profile-iters-0", [*PROFILE, "--iters", "0"], ["--iters 0"]),
    # leaderboard, compare, explain, weights
    Case("leaderboard-missing", ["leaderboard", "{W}/nowhere"], ["nowhere"]),
    Case("leaderboard-empty", ["leaderboard", "{W}/empty", "--out", "{W}/lb"], ["no result cells"], absent=["lb"]),
    Case("leaderboard-level", ["leaderboard", "{W}/empty", "--level", "1.5"], ["--level"]),
    Case("leaderboard-resamples", ["leaderboard", "{W}/empty", "--resamples", "0"], ["--resamples"]),
    Case("compare-missing", ["compare", "{W}/nowhere", "--dataset", "d", "--a", "x", "--b", "y"], ["nowhere"]),
    Case("compare-empty", ["compare", "{W}/empty", "--dataset", "d", "--a", "x", "--b", "y"], ["no result cells"]),
    Case("explain-missing", ["explain", "--run", "{W}/nowhere"], ["nowhere", "not found"]),
    Case("explain-not-a-run", ["explain", "--run", "{W}/empty"], ["config.yaml"]),
    Case("weights-list-nothing", ["weights", "list"], ["model names or --config"]),
    Case("weights-fetch-no-to", ["weights", "fetch", "vit"], ["--to"]),
]


def corrupt_three(manifest: Path) -> list[str]:
    """Make the first three train images zero-byte, truncated and text; returns their paths."""
    rows = [r for r in csv.DictReader(manifest.open()) if r["split"] == "train"][:3]
    root = manifest.parent
    (root / rows[0]["path"]).write_bytes(b"")
    data = (root / rows[1]["path"]).read_bytes()
    (root / rows[1]["path"]).write_bytes(data[: len(data) // 2])
    (root / rows[2]["path"]).write_text("this is not a JPEG")
    return [r["path"] for r in rows]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("bad_inputs")
    manifest = make_image_set(w / "data", n=24, size=40)
    (w / "empty").mkdir()
    (w / "a_file").write_text("x")
    (w / "broken.yaml").write_text("data: [1,\n")
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("age")] = "forty"
    (w / "bad_age.csv").write_text("\n".join([lines[0], lines[1], ",".join(cells), *lines[3:]]) + "\n")
    (w / "no_age.csv").write_text("path,years,split\nimg/0/000.jpg,10,train\n")
    bad = make_image_set(w / "bad", n=24, size=40)
    corrupt_three(bad)
    fit = {
        "out_dir": str(w / "run"),
        "data": {"manifest": str(manifest), "img_size": 32, "batch_size": 4, "num_workers": 0},
        "model": {"name": "convnext-atto"},
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
        "logger": {"kind": "none"},
    }
    (w / "fit.yaml").write_text(yaml.safe_dump(fit))
    bench = {
        "models": ["convnext-atto", "nope-net"],
        "datasets": {"d": {"manifest": str(manifest)}},
        "data": {"img_size": 32},
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
    }
    (w / "bench.yaml").write_text(yaml.safe_dump(bench))
    return w


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, workspace: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("agebench.models.weights.cached_file", lambda spec: None)
    args = [a.replace("{W}", str(workspace)) for a in case.args]
    code = main(args)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and "decoding" not in ln]
    assert code == case.code, err
    assert "Traceback" not in err
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith(f"agebench {args[0]}: error: "), err
        text = lines[0]
    else:
        text = err + out
    for fragment in case.says:
        assert fragment in text.replace(str(workspace) + "/", ""), text
    for rel in case.absent:
        assert not (workspace / rel).exists(), f"{rel} left behind"


def test_corpus_is_wide() -> None:
    """The issue asks for at least 40 cases across these commands."""
    commands = {c.args[0] for c in CASES}
    assert len(CASES) >= 40
    assert {"synth", "audit", "prepare", "fit", "bench", "profile", "leaderboard", "explain", "compare"} <= commands


# ---------------------------------------------------------------- bad images met while training


def _fit_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "experiments/fit/synth_small.yaml"),
        f"data.manifest={manifest}",
        "data.img_size=32",
        "data.batch_size=4",
        "data.use_cache=false",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger.kind=none",
        f"out_dir={out}",
        *extra,
    ]


def test_bad_images_audit_names_rows_fit_stops_and_skip_records(tmp_path, capsys) -> None:
    manifest = make_image_set(tmp_path / "data", n=24, size=40)
    bad = corrupt_three(manifest)
    assert main(["audit", str(manifest), "--decode"]) == 1
    out = capsys.readouterr().out
    for path in bad:
        assert path in out
    assert "1 empty, 1 unreadable, 1 truncated" in out

    assert main(_fit_args(manifest, tmp_path / "strict")) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "manifest row" in err[0] and any(p in err[0] for p in bad) and "on_bad_image=skip" in err[0]

    assert main(_fit_args(manifest, tmp_path / "skip", "data.on_bad_image=skip")) == 0
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert sorted(s["path"] for s in metrics["skipped_images"]) == sorted(bad)
    assert {s["kind"] for s in metrics["skipped_images"]} == {"empty", "truncated", "unreadable"}
    assert "skipped" in capsys.readouterr().err


def test_bench_cell_with_a_bad_test_image_fails_keeps_checkpoint_and_resumes(tmp_path, capsys) -> None:
    from agebench.bench.plan import expand, load_bench_config
    from agebench.bench.runner import cell_state
    from agebench.data.manifest import load_manifest

    manifest = make_image_set(tmp_path / "data", n=24, size=40)
    test_path = next(r.path for r in load_manifest(manifest).records if r.split == "test")
    good = (manifest.parent / test_path).read_bytes()
    (manifest.parent / test_path).write_bytes(b"")  # broken after the audit, found at the final evaluation
    config = {
        "models": ["convnext-atto"],
        "datasets": {"d": {"manifest": str(manifest)}},
        "data": {"img_size": 32, "batch_size": 4, "num_workers": 0, "use_cache": False},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "profile": {"batch_size": 2, "warmup": 0, "iters": 1},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    cell = expand(load_bench_config(tmp_path / "bench.yaml"), tmp_path / "r")[0]
    from agebench.bench.cell import EXIT_FAILED, run_cell
    from agebench.bench.runner import cell_spec

    cell_dir = Path(cell.fit["out_dir"])
    assert run_cell(cell_dir, cell_spec(cell)) == EXIT_FAILED
    record = json.loads((cell_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["resumable"] and test_path in record["error"]
    assert (cell_dir / "checkpoints" / "last.ckpt").is_file()
    assert cell_state(cell, cell_dir) == "resume"
    (manifest.parent / test_path).write_bytes(good)
    assert run_cell(cell_dir, cell_spec(cell)) == 0
    assert json.loads((cell_dir / "metrics.json").read_text())["status"] == "ok"


# ---------------------------------------------------------------- two runners on one results folder


def test_second_bench_skips_a_cell_another_process_holds(tmp_path, capsys) -> None:
    from agebench.bench.cell import lock_cell

    manifest = make_image_set(tmp_path / "data", n=24, size=40)
    config = {
        "models": ["convnext-atto"],
        "datasets": {"d": {"manifest": str(manifest)}},
        "data": {"img_size": 32},
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    cell_dir = tmp_path / "r" / "d" / "convnext-atto" / "seed0"
    cell_dir.mkdir(parents=True)
    (cell_dir / "in-progress.txt").write_text("the first run's files")
    held = lock_cell(cell_dir)  # what the first runner holds while its cell trains
    assert held is not None
    try:
        for extra in ([], ["--force"]):
            assert main(["bench", "--config", str(tmp_path / "bench.yaml"), "--out", str(tmp_path / "r"), *extra]) == 0
            out = capsys.readouterr().out
            assert "skipped" in out and "another agebench process" in out
            assert (cell_dir / "in-progress.txt").is_file() and not (cell_dir / "metrics.json").exists()
    finally:
        held.close()


@pytest.mark.slow
def test_two_bench_processes_on_one_results_folder(tmp_path) -> None:
    """The real thing: a second `agebench bench` while the first trains leaves the first's cell alone."""
    manifest = make_image_set(tmp_path / "data", n=48, size=40, subjects=12)
    config = {
        "models": ["convnext-atto"],
        "datasets": {"d": {"manifest": str(manifest)}},
        "data": {"img_size": 32, "batch_size": 4},
        "trainer": {"max_epochs": 60, "accelerator": "cpu"},  # long enough for the second to start meanwhile
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "agebench",
        "bench",
        "--config",
        str(tmp_path / "bench.yaml"),
        "--out",
        str(tmp_path / "r"),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cell_log = tmp_path / "r" / "d" / "convnext-atto" / "seed0" / "cell.log"
    deadline = time.time() + 120
    while not cell_log.is_file() and time.time() < deadline:  # the first runner holds the cell from here on
        time.sleep(0.1)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0
    assert second.returncode == 0 and "another agebench process" in second.stdout
    metrics = json.loads((cell_log.parent / "metrics.json").read_text())
    assert metrics["status"] == "ok"


def test_prepare_leaves_bad_files_out_and_lists_them(tmp_path) -> None:
    from test_sources import make_utkface

    from agebench.data.manifest import load_manifest
    from agebench.data.prepare import prepare

    raw = make_utkface(tmp_path / "raw")
    victims = sorted(p.name for p in raw.glob("*.chip.jpg"))[:2]
    (raw / victims[0]).write_bytes(b"")
    data = (raw / victims[1]).read_bytes()
    (raw / victims[1]).write_bytes(data[: len(data) // 2])
    result = prepare("utkface", raw, tmp_path / "out", face_detector="none", workers=1, progress=False)
    paths = {r.path for r in load_manifest(result.manifest, raw).records}
    assert not paths & set(victims)
    assert {b["path"]: b["kind"] for b in result.report["bad_images"]} == {victims[0]: "empty", victims[1]: "truncated"}
    assert result.report["counts"]["bad_images"] == 2
    assert victims[0] in (tmp_path / "out" / "report.md").read_text()


def test_new_config_keys_at_their_defaults_keep_older_config_hashes() -> None:
    """Cells finished before on_bad_image and weights_dir existed must stay 'done' after the upgrade."""
    from agebench.config import FitConfig, config_hash, to_dict

    data = to_dict(FitConfig())
    older = json.loads(json.dumps(data))
    del older["data"]["on_bad_image"], older["model"]["weights_dir"]
    assert config_hash(data) == config_hash(older)
    data["data"]["on_bad_image"] = "skip"
    assert config_hash(data) != config_hash(older)


def test_leaderboard_flags_rows_with_skipped_images(tmp_path) -> None:
    from test_leaderboard import write_cell

    from agebench.report import build_leaderboard

    root = tmp_path / "R"
    write_cell(root, "synth", "convnext-atto", 0)
    write_cell(root, "synth", "hybrid-atto", 0, skipped_images=[{"path": "img/1.jpg", "kind": "empty", "row": 3}])
    build_leaderboard(root, tmp_path / "out", "all")
    rows = {r["model"]: r for r in json.loads((tmp_path / "out" / "leaderboard.json").read_text())["rows"]}
    assert "skipped images" in rows["hybrid-atto"]["flags"] and "skipped images" not in rows["convnext-atto"]["flags"]
    assert "**skipped images**" in (tmp_path / "out" / "leaderboard.md").read_text()


# ---------------------------------------------------------------- files saved by a spreadsheet ("CSV UTF-8")


def _as_spreadsheet(text: str) -> bytes:
    """What Excel's "CSV UTF-8" writes: a byte-order mark, then CRLF line ends."""
    return b"\xef\xbb\xbf" + text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def test_spreadsheet_manifest_with_bom_and_crlf_is_read_by_audit_loader_and_cache(tmp_path, capsys) -> None:
    from agebench.data.cache import _manifest_paths
    from agebench.data.manifest import load_manifest

    manifest = make_image_set(tmp_path / "data", n=24, size=40)
    excel = manifest.with_name("excel.csv")
    excel.write_bytes(_as_spreadsheet(manifest.read_text(encoding="utf-8")))
    assert main(["audit", str(excel)]) == 0, capsys.readouterr().err
    plain, read = load_manifest(manifest), load_manifest(excel)
    assert [(r.path, r.age, r.subject_id, r.split) for r in read.records] == [
        (r.path, r.age, r.subject_id, r.split) for r in plain.records
    ]
    assert _manifest_paths(excel) == _manifest_paths(manifest)


def test_spreadsheet_predictions_and_crops_files_are_read(tmp_path) -> None:
    from agebench import evaluate
    from agebench.data import faces
    from agebench.report import failures, results

    preds = tmp_path / "predictions.csv"
    preds.write_bytes(_as_spreadsheet("path,age,pred,subject_id\na.jpg,20,22.5,s1\nb.jpg,30,29,s2\n"))
    assert list(evaluate.read_predictions(preds)) == [("a.jpg", 20.0, 22.5), ("b.jpg", 30.0, 29.0)]
    assert [(p.path, p.age, p.pred) for p in failures.read_predictions(preds)] == [
        ("a.jpg", 20.0, 22.5),
        ("b.jpg", 30.0, 29.0),
    ]
    loaded = results.load_predictions(preds)
    assert list(loaded.paths) == ["a.jpg", "b.jpg"] and list(loaded.subjects) == ["s1", "s2"]
    crops = tmp_path / "manifest.crops.csv"
    crops.write_bytes(_as_spreadsheet("path,face,crop\na.jpg,no_face,\n"))
    assert faces.read_crops(crops) == {"a.jpg": ("no_face", None)}


# ---------------------------------------------------------------- the paired test on differences that cancel


def test_sign_flip_counts_differences_zero_to_rounding_as_ties() -> None:
    """Two models whose errors cancel within every subject: the unit sums are float residue (~1e-15), which
    used to decide the permutation ties (p 0.52 here, 0.76 on a bench); the test must say p = 1."""
    import numpy as np

    from agebench.report import stats

    rng = np.random.default_rng(0)
    age = rng.uniform(10, 80, 100)
    subjects = np.repeat(np.arange(50), 2).tolist()
    x = rng.uniform(0.1, 7, 50)
    err_a, err_b = np.full(100, 0.3), np.full(100, 0.3)
    err_a[0::2] += x
    err_b[1::2] += x
    d = np.abs(age + err_a - age) - np.abs(age - err_b - age)
    seeds = [stats.cluster_sums(d, subjects)]
    assert 0 < np.abs(seeds[0][0]).max() < 1e-12  # the residue is there
    assert stats.sign_flip_test(seeds, 9999, np.random.default_rng(2)) == 1.0
    assert stats.sign_flip_test(seeds * 3, 9999, np.random.default_rng(2), shared_units=True) == 1.0
    assert stats.sign_flip_test(seeds * 3, 9999, np.random.default_rng(2)) == 1.0
    # Units that are not zero but whose signed sum is (0.1 + 0.2 - 0.3 is 5.6e-17 in floats): p = 1 too.
    exact = stats.cluster_sums(np.array([0.1, 0.2, -0.3]))
    assert stats.sign_flip_test([exact], 9999) == 1.0
    # A real difference is still one: 1e-6 years is far above the tolerance.
    assert stats.sign_flip_test([stats.cluster_sums(np.full(12, 1e-6))], 9999) < 0.001


# ---------------------------------------------------------------- outputs and devices checked before any work


def _heavy(*args, **kwargs):
    raise AssertionError("heavy work started before the arguments were checked")


@dataclass
class Early:
    """A command whose arguments must be refused before ``guards`` (dotted names of the heavy steps) run.
    ``{W}``: the workspace, ``{OUT}``: the bad output location under test."""

    id: str
    args: list[str]
    guards: list[str]
    says: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


LOADS_RUN = ["agebench.predict.load", "agebench.report.explain.load_run", "agebench.report.explain.open_run"]
PREDICT = ["predict", "--run", "{W}/trained", "{W}/data/img"]
EXPLAIN = ["explain", "--run", "{W}/trained"]

# Every command with an output option (--out, --to), given one it cannot write.
OUTPUTS = [
    Early("predict", [*PREDICT, "--out", "{OUT}/p.csv"], LOADS_RUN),
    Early("export", ["export", "--run", "{W}/trained", "--format", "torchscript", "--out", "{OUT}/m.pt"], LOADS_RUN),
    Early("explain", [*EXPLAIN, "--out", "{OUT}/x"], [*LOADS_RUN, "agebench.report.failures.write_failure_report"]),
    Early(
        "leaderboard-file", ["leaderboard", "{W}/empty", "--out", "{OUT}/lb.md"], ["agebench.report.build_leaderboard"]
    ),
    Early(
        "leaderboard-folder", ["leaderboard", "{W}/empty", "--out", "{OUT}/lb/"], ["agebench.report.build_leaderboard"]
    ),
    Early("bench", ["bench", "--config", "{W}/bench.yaml", "--out", "{OUT}/r"], ["agebench.bench.runner.run_bench"]),
    Early(
        "bundle",
        ["bundle", "{W}/trained", "--out", "{OUT}/b.zip"],
        ["agebench.report.bundle.expand_cells", "agebench.report.bundle.write_bundle"],
    ),
    Early("synth", ["synth", "--out", "{OUT}/s", "--n", "10"], ["agebench.data.synthetic.generate"]),
    Early(
        "prepare",
        ["prepare", "utkface", "--root", "{W}/utk", "--out", "{OUT}/p"],
        ["agebench.data.prepare.scan", "agebench.data.prepare.check_files"],
    ),
    Early("weights-fetch", ["weights", "fetch", "vit", "--to", "{OUT}/w"], ["agebench.models.fetch.fetch"]),
]
# (where, what the line says): under /proc nothing can be made; under a file no folder can be.
BAD_OUTS = [("/proc/agebench", "cannot be created in /proc"), ("{W}/a_file", "a_file is not a folder")]


@pytest.fixture(scope="module")
def early(workspace: Path) -> Path:
    """The workspace plus a result folder (its config only: every case stops before the checkpoint is read)
    and a raw UTKFace tree."""
    from test_sources import make_utkface

    (workspace / "trained").mkdir(exist_ok=True)
    data = {"manifest": str(workspace / "data" / "manifest.csv"), "img_size": 32}
    (workspace / "trained" / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    if not (workspace / "utk").is_dir():
        make_utkface(workspace / "utk")
    return workspace


def _run_early(case: Early, w: Path, out: str, monkeypatch, capsys) -> str:
    """Run the case with its heavy steps replaced by an assertion; returns its one error line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for target in case.guards:
        monkeypatch.setattr(target, _heavy)
    args = [a.replace("{OUT}", out).replace("{W}", str(w)) for a in case.args]
    before = sorted(p.relative_to(w) for p in w.rglob("*"))
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"agebench {args[0]}: error: "), err
    assert sorted(p.relative_to(w) for p in w.rglob("*")) == before, "something was written"
    for rel in case.absent:
        assert not (w / rel).exists(), f"{rel} left behind"
    return lines[0]


@pytest.mark.parametrize("where,why", BAD_OUTS, ids=["proc", "under-a-file"])
@pytest.mark.parametrize("case", OUTPUTS, ids=[c.id for c in OUTPUTS])
def test_an_unwritable_output_is_one_line_before_any_work(case, where, why, early, monkeypatch, capsys) -> None:
    out = where.replace("{W}", str(early))
    line = _run_early(case, early, out, monkeypatch, capsys)
    flag = "--to" if "--to" in case.args else "--out"
    given = next(a for a in case.args if "{OUT}" in a).replace("{OUT}", out)
    assert f"{flag} {given}: " in line and why in line, line


def _options(command: str) -> set[str]:
    """The options a command's own ``add_arguments`` declares, read from its public help text."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog=command)
    importlib.import_module(f"agebench.cli.{command}").add_arguments(parser)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", parser.format_help()))


def test_every_output_and_device_option_has_an_early_case() -> None:
    """A new command with --out, --to or --device must join OUTPUTS / DEVICES, so it gets the same checks."""
    from agebench.cli import COMMANDS

    for option, cases in (("--out", OUTPUTS), ("--to", OUTPUTS), ("--device", DEVICES)):
        having = {name for name in COMMANDS if option in _options(name)}
        covered = {c.args[0] for c in cases if option in c.args}
        assert having == covered, f"{option}: {sorted(having ^ covered)}"


# Every command with --device, given one this machine does not have: (device, torch patches, what the line says).
DEVICES = [
    Early("predict", [*PREDICT, "--out", "{W}/p.csv", "--device", "{OUT}"], LOADS_RUN, absent=["p.csv"]),
    Early("explain", [*EXPLAIN, "--out", "{W}/x", "--device", "{OUT}"], LOADS_RUN, absent=["x"]),
    Early("profile", [*PROFILE, "--device", "{OUT}"], ["agebench.models.build_model"]),
]
BAD_DEVICES = [
    ("cuda", {"is_available": False}, "no CUDA device is available"),
    ("cuda:2", {"is_available": True, "device_count": 1}, "only 1 CUDA device(s) here"),
    ("gpu0", {}, "not a device; expected cpu, cuda, cuda:N or mps"),
    ("mps", {"mps": False}, "MPS (Apple GPU) is not available"),
    ("meta", {}, "device type 'meta' is not supported"),
]


@pytest.mark.parametrize("device,machine,why", BAD_DEVICES, ids=[d for d, _, _ in BAD_DEVICES])
@pytest.mark.parametrize("case", DEVICES, ids=[c.id for c in DEVICES])
def test_a_device_this_machine_lacks_is_one_line_before_any_work(
    case, device, machine, why, early, monkeypatch, capsys
) -> None:
    import torch

    if "is_available" in machine:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: machine["is_available"])
    if "device_count" in machine:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: machine["device_count"])
    if "mps" in machine:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: machine["mps"])
    line = _run_early(case, early, device, monkeypatch, capsys)
    assert f"--device {device}: " in line and why in line, line


# prepare: a mistyped protocol or fold is named before the tree is scanned and every image decoded.
PREPARE = ["prepare", "utkface", "--root", "{W}/utk", "--out", "{W}/p"]
PREPARE_GUARDS = ["agebench.data.prepare.scan", "agebench.data.prepare.check_files"]
PREPARE_CASES = [
    Early(
        "cvpr24-missing", [*PREPARE, "--protocol", "cvpr24:{W}/nope.json"], PREPARE_GUARDS, ["nope.json", "not found"]
    ),
    Early("cvpr24-bad-json", [*PREPARE, "--protocol", "cvpr24:{W}/broken.yaml"], PREPARE_GUARDS, ["not valid JSON"]),
    Early(
        "cvpr24-fold", [*PREPARE, "--protocol", "cvpr24:{W}/cvpr24.json", "--fold", "3"], PREPARE_GUARDS, ["--fold 3"]
    ),
    Early("fold-7", [*PREPARE, "--fold", "7"], PREPARE_GUARDS, ["--fold 7", "0..4"]),
    Early("fold-negative", [*PREPARE, "--fold", "-1"], PREPARE_GUARDS, ["--fold -1", "0..4"]),
    Early("lopo-negative", [*PREPARE, "--protocol", "lopo", "--fold", "-2"], PREPARE_GUARDS, ["--fold -2"]),
    Early("official-fold", [*PREPARE, "--protocol", "official", "--fold", "1"], PREPARE_GUARDS, ["--fold 1"]),
    Early("official-all", [*PREPARE, "--protocol", "official", "--fold", "all"], PREPARE_GUARDS, ["--fold all"]),
    Early("coral-missing", [*PREPARE, "--protocol", "coral:{W}/nowhere"], PREPARE_GUARDS, ["nowhere", "not a folder"]),
    Early("coral-no-csvs", [*PREPARE, "--protocol", "coral:{W}/empty"], PREPARE_GUARDS, ["_train.csv"]),
    Early("protocol-typo", [*PREPARE, "--protocol", "subject-exclusiv"], PREPARE_GUARDS, ["subject-exclusiv"]),
]


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c.id for c in PREPARE_CASES])
def test_prepare_checks_protocol_and_fold_before_reading_the_tree(case, early, monkeypatch, capsys) -> None:
    (early / "cvpr24.json").write_text(json.dumps([{"img_path": "1_0_0_x.jpg", "age": 1, "folder": 0}]))
    line = _run_early(case, early, "", monkeypatch, capsys)
    for fragment in case.says:
        assert fragment in line.replace(str(early) + "/", ""), line
    assert not (early / "p").exists()
