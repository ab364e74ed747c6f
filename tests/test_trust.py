"""Scale and trust: determinism, numerical faults, exact resume after SIGKILL, DDP evaluation without repeats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image_set

from agebench.bench.plan import expand, load_bench_config
from agebench.config import FitConfig, from_dict, load_fit_config, to_dict
from agebench.evaluate import read_predictions
from agebench.train import fit

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
# What may differ between two identical runs: how long things took, and where the files were written.
VOLATILE = {"train_seconds", "train_throughput", "peak_memory_mb", "checkpoint", "wall_seconds"}


def tiny_fit(tmp_path: Path, out: str, *overrides: str) -> FitConfig:
    manifest = make_image_set(tmp_path / "data", n=48, size=40, subjects=12)
    return load_fit_config(
        None,
        [
            f"data.manifest={manifest}",
            "data.img_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.name=convnext-atto",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "logger.kind=none",
            "optim.lr=1e-3",
            f"out_dir={tmp_path / out}",
            *overrides,
        ],
    )


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    first = fit(tiny_fit(tmp_path, "a"))
    second = fit(tiny_fit(tmp_path, "b"))
    assert stable(first) == stable(second)
    assert (tmp_path / "a/predictions.csv").read_bytes() == (tmp_path / "b/predictions.csv").read_bytes()


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="training loss is (nan|inf)"):
        fit(tiny_fit(tmp_path, "nan", "optim.lr=1e30", "optim.warmup_frac=0.0"))


def test_nan_cell_is_recorded_as_failed_never_as_a_number(tmp_path):
    cfg = tiny_fit(tmp_path, "unused")
    bench = {
        "models": ["convnext-atto"],
        "datasets": {"tiny": {"manifest": cfg.data.manifest}},
        "seeds": [0],
        "trainer": cfg.trainer,
        "data": {"img_size": 32, "batch_size": 8, "num_workers": 0},
        "optim": {"lr": 1e30, "warmup_frac": 0.0},
        "logger": {"kind": "none"},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    results = tmp_path / "results"
    from agebench.cli import main

    # The runner in this process; the cell in its own, as always.
    assert main(["bench", "--config", str(tmp_path / "bench.yaml"), "--out", str(results)]) == 1
    record = json.loads((results / "tiny/convnext-atto/seed0/metrics.json").read_text())
    assert record["status"] == "failed" and "training loss is" in record["error"]
    assert "mae" not in record and "cs5" not in record


def _cell_dir(tmp_path: Path, name: str, max_epochs: int = 3) -> Path:
    cfg = tiny_fit(tmp_path, "unused", f"trainer.max_epochs={max_epochs}")
    bench = {
        "models": ["convnext-atto"],
        "datasets": {"tiny": {"manifest": cfg.data.manifest}},
        "seeds": [0],
        "trainer": cfg.trainer,
        "data": to_dict(cfg)["data"] | {"manifest": cfg.data.manifest},
        "optim": {"lr": 1e-3},
        "logger": {"kind": "none"},
        "profile": {"batch_size": 2, "warmup": 1, "iters": 1},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(bench))
    (cell,) = expand(load_bench_config(tmp_path / f"{name}.yaml"), tmp_path / name)
    cell_dir = Path(cell.fit["out_dir"])
    cell_dir.mkdir(parents=True)
    spec = {
        "dataset": cell.dataset,
        "model": cell.model,
        "seed": cell.seed,
        "fit": cell.fit,
        "profile": vars(cell.profile),
        "config_hash": cell.config_hash,
    }
    (cell_dir / "cell.json").write_text(json.dumps(spec))
    return cell_dir


def _run_cell(cell_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agebench.bench.cell", str(cell_dir)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_cell_killed_after_first_checkpoint_resumes_to_identical_metrics(tmp_path):
    from agebench.bench.cell import run_cell

    reference, killed = _cell_dir(tmp_path, "reference"), _cell_dir(tmp_path, "killed")
    assert run_cell(reference) == 0  # in this process: only the killed run needs one of its own

    proc = _run_cell(killed)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the cell finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    assert run_cell(killed) == 0  # resumes from last.ckpt, in this process

    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for key in ("mae", "rmse", "cs", "cs5", "mae_by_age_group", "best_val_mae", "epochs", "n_test"):
        assert a[key] == b[key], key
    assert list(read_predictions(reference / "predictions.csv")) == list(read_predictions(killed / "predictions.csv"))


@pytest.mark.slow
def test_two_gloo_processes_evaluate_each_test_image_once(tmp_path):
    """DDP with 2 CPU processes x batch 4 against 1 process x batch 8: the same global batches, so the
    metrics agree up to float reduction order (tolerance 0.05 years); the test set is never padded."""
    single = tiny_fit(tmp_path, "single", "data.batch_size=8")
    ddp = tiny_fit(tmp_path, "ddp", "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp")
    for name, cfg in (("single", single), ("ddp", ddp)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(to_dict(cfg)))
        run = subprocess.run(
            [sys.executable, "-m", "agebench", "fit", "--config", str(path)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    a = json.loads((tmp_path / "single/metrics.json").read_text())
    b = json.loads((tmp_path / "ddp/metrics.json").read_text())
    paths = [p for p, _, _ in read_predictions(tmp_path / "ddp/predictions.csv")]
    assert len(paths) == len(set(paths)) == a["n_test"] == b["n_test"]
    assert b["mae"] == pytest.approx(a["mae"], abs=0.05)
    assert b["best_val_mae"] == pytest.approx(a["best_val_mae"], abs=0.05)
    assert from_dict(FitConfig, yaml.safe_load((tmp_path / "ddp/config.yaml").read_text())).trainer["devices"] == 2


@pytest.mark.slow
def test_documented_torchrun_line_runs_one_cell_on_two_cpu_ranks(tmp_path):
    """experiments/cluster/torchrun.sh as the README gives it, with gloo on CPU instead of NCCL on GPUs."""
    cfg = tiny_fit(tmp_path, "unused")
    bench = {
        "models": ["convnext-atto"],
        "datasets": {"tiny": {"manifest": cfg.data.manifest}},
        "seeds": [0],
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "data": {"img_size": 32, "batch_size": 4, "num_workers": 0},
        "logger": {"kind": "none"},
        "profile": {"batch_size": 2, "warmup": 1, "iters": 1},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    env = dict(ENV, RESULTS=str(tmp_path / "results"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    run = subprocess.run(
        [
            "bash",
            str(REPO / "experiments/cluster/torchrun.sh"),
            str(tmp_path / "bench.yaml"),
            "0",
            "2",
            "trainer.accelerator=cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cell = tmp_path / "results/tiny/convnext-atto/seed0"
    metrics = json.loads((cell / "metrics.json").read_text())
    paths = [p for p, _, _ in read_predictions(cell / "predictions.csv")]
    assert metrics["status"] == "ok" and len(paths) == len(set(paths)) == metrics["n_test"] == 8


def test_wandb_is_offline_without_a_key_or_when_asked(monkeypatch, tmp_path):
    from agebench.train import wandb_offline

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_offline()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline()


def test_cpu_precision_warning_only_where_the_cpu_emulates_it(monkeypatch, capsys):
    import agebench.train as train

    monkeypatch.setattr(train, "cpu_bf16_flags", lambda: [])
    train._warn_cpu_precision({"accelerator": "cpu", "precision": "bf16-mixed"})
    assert "bf16 is emulated on a CPU without avx512_bf16" in capsys.readouterr().out
    monkeypatch.setattr(train, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    train._warn_cpu_precision({"accelerator": "cpu", "precision": "bf16-mixed"})
    train._warn_cpu_precision({"accelerator": "cpu", "precision": "32-true"})
    assert capsys.readouterr().out == ""
    train._warn_cpu_precision({"accelerator": "cpu", "precision": "16-mixed"})
    assert "fp16 is emulated" in capsys.readouterr().out


def test_slurm_job_id_names_the_array_task(monkeypatch):
    from agebench.launch import slurm_job_id

    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm_job_id() == "41"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job_id() == "40_1"  # what `scontrol requeue` needs for one task of an array


def test_cpu_threads_follow_the_slurm_task_not_the_node(monkeypatch):
    import os

    from agebench.launch import process_cpus

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert process_cpus() == len(os.sched_getaffinity(0))
    assert process_cpus(local_ranks=len(os.sched_getaffinity(0)) + 1) == 1
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert process_cpus(local_ranks=4) == 3  # one rank is one task: its own allocation, whatever the node has


def test_an_older_hpc_checkpoint_is_removed_not_resumed_from(tmp_path, monkeypatch, capsys):
    """Lightning resumes from hpc_ckpt_N.ckpt by itself under SLURM when no path is given; agebench never writes
    one, and one left by an older version (a mid-epoch state) must not become the start of a run."""
    cfg = tiny_fit(tmp_path, "run", "trainer.max_epochs=1")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "hpc_ckpt_1.ckpt").write_bytes(b"not a checkpoint")  # loading it would fail the run
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "agebench", "SLURM_JOB_ID": "5"}.items():
        monkeypatch.setenv(key, value)  # Lightning's SLURMEnvironment.detect() is true
    fit(cfg)
    assert not list(out.glob("hpc_ckpt_*.ckpt"))
    assert "removing hpc_ckpt_1.ckpt" in capsys.readouterr().out
