"""The benchmark runner end to end on tiny data: cells as processes, result files, skip/redo on rerun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_image_set

from agebench.cli import main
from agebench.evaluate import read_predictions

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "trainer": {
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "enable_progress_bar": True,
        "log_every_n_steps": 1,
    },
    "data": {"img_size": 32, "batch_size": 8, "num_workers": 0},
    "optim": {"lr": 1.0e-3},
    "profile": {"batch_size": 4, "warmup": 1, "iters": 2},
}


def write_bench(tmp_path: Path, models: list[str], seeds: list[int], **extra) -> Path:
    manifest = make_image_set(tmp_path / "data", n=48, size=40, subjects=12)
    config = {"models": models, "datasets": {"tiny": {"manifest": str(manifest)}}, "seeds": seeds, **TINY, **extra}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_cell_bench_writes_consistent_results_and_leaderboard(tmp_path, capsys):
    config = write_bench(tmp_path, ["convnext-atto", "hybrid-atto"], [0])
    results = tmp_path / "results"
    assert main(["bench", "--config", str(config), "--out", str(results)]) == 0
    cells = sorted(results.glob("tiny/*/seed0/metrics.json"))
    assert [c.parent.parent.name for c in cells] == ["convnext-atto", "hybrid-atto"]
    for metrics_file in cells:
        m = json.loads(metrics_file.read_text())
        assert m["status"] == "ok" and m["n_test"] == 8
        for key in (
            "mae",
            "rmse",
            "cs",
            "cs5",
            "mae_by_age_group",
            "params",
            "trainable_params",
            "gflops",
            "latency_ms",
            "throughput",
            "train_throughput",
            "peak_memory_mb",
            "wall_seconds",
        ):
            assert m[key] is not None, key
        for key in (
            "agebench_commit",
            "torch",
            "pytorch_lightning",
            "timm",
            "device",
            "precision",
            "config_hash",
            "manifest_sha256",
            "seed",
        ):
            assert m["provenance"][key] is not None, key
        rows = list(read_predictions(metrics_file.parent / "predictions.csv"))
        paths = [r[0] for r in rows]
        assert len(paths) == len(set(paths)) == m["n_test"]
        err = np.abs(np.array([r[2] for r in rows]) - np.array([r[1] for r in rows]))
        assert m["mae"] == pytest.approx(err.mean(), abs=1e-9)
        assert m["cs5"] == pytest.approx((err <= 5).mean(), abs=1e-12)

    capsys.readouterr()
    board = tmp_path / "board"
    assert main(["leaderboard", str(results), "--format", "all", "--out", str(board)]) == 0
    md = (board / "leaderboard.md").read_text()
    with open(board / "leaderboard.csv", newline="") as fh:
        csv_rows = {r["model"]: r for r in csv.DictReader(fh) if r["dataset"] == "tiny"}
    for metrics_file in cells:
        m = json.loads(metrics_file.read_text())
        assert float(csv_rows[m["model"]]["mae_mean"]) == pytest.approx(m["mae"], abs=1e-5)
        assert float(csv_rows[m["model"]]["cs5_mean"]) == pytest.approx(m["cs5"], abs=1e-5)
        assert m["model"] in md and f"{m['mae']:.2f}" in md
    assert len(json.loads((board / "leaderboard.json").read_text())) > 0


def test_rerun_skips_finished_cells_and_force_reruns(tmp_path, capsys):
    config = write_bench(tmp_path, ["convnext-atto"], [0])
    results = tmp_path / "results"
    assert main(["bench", "--config", str(config), "--out", str(results)]) == 0
    metrics = results / "tiny/convnext-atto/seed0/metrics.json"
    stamp = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["bench", "--config", str(config), "--out", str(results)]) == 0
    assert "1 finished, 0 to run" in capsys.readouterr().out
    assert metrics.stat().st_mtime_ns == stamp
    # A changed config is not "finished": the cell reruns from scratch.
    assert main(["bench", "--config", str(config), "--out", str(results), "optim.lr=5e-4"]) == 0
    assert "stale" in capsys.readouterr().out
    assert metrics.stat().st_mtime_ns != stamp


def test_bad_bench_config_names_the_key(tmp_path, capsys):
    config = write_bench(tmp_path, ["convnext-atto"], [0])
    assert main(["bench", "--config", str(config), "--out", str(tmp_path / "r"), "trainer.max_epoch=1"]) == 2
    assert "trainer.max_epoch" in capsys.readouterr().err
    assert main(["bench", "--config", str(config), "--out", str(tmp_path / "r"), "models=[no-such-net]"]) != 0


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_killed_runner_reruns_only_the_missing_cell(tmp_path):
    config = write_bench(tmp_path, ["convnext-atto"], [0, 1])
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "agebench", "bench", "--config", str(config), "--out", str(results)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    first = results / "tiny/convnext-atto/seed0/metrics.json"
    second = results / "tiny/convnext-atto/seed1"
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (second / "cell.json").is_file(), 240, runner)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert first.is_file() and not (second / "metrics.json").is_file()
    stamp = first.stat().st_mtime_ns
    # The orphaned cell process follows the runner (PR_SET_PDEATHSIG) and releases its lock.
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 finished, 1 to run" in rerun.stdout
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((second / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.parametrize(
    "config",
    sorted(
        str(p) for p in (REPO / "experiments").rglob("*.yaml") if "fit" not in p.parts and not p.name.startswith("_")
    ),
)
def test_shipped_bench_configs_expand_into_valid_cells(config):
    from agebench.bench.plan import expand, load_bench_config

    cells = expand(load_bench_config(config), "results")
    assert cells and all(c.fit["trainer"] for c in cells)


def test_shipped_fit_config_is_valid():
    from agebench.config import load_fit_config

    cfg = load_fit_config(REPO / "experiments/fit/synth_small.yaml")
    assert cfg.model.name == "convnext-atto"


def test_list_and_single_cell_selection(tmp_path, capsys):
    config = write_bench(tmp_path, ["convnext-atto", "hybrid-atto"], [0])
    assert main(["bench", "--config", str(config), "--out", str(tmp_path / "r"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "0  tiny/convnext-atto/seed0" in out and "1  tiny/hybrid-atto/seed0" in out and "new" in out
    assert main(["bench", "--config", str(config), "--out", str(tmp_path / "r"), "--cell", "7"]) == 2
    assert "no such cell" in capsys.readouterr().err
