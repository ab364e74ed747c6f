"""`logger.kind: tensorboard | mlflow`: a tiny fit logs the CSV logger's metric names through Lightning's loggers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import make_image_set

from agebench.config import FitConfig, from_dict
from agebench.errors import UserError

SIZE = 32


def _fit(tmp: Path, kind: str, **logger) -> Path:
    from agebench.train import fit

    manifest = tmp / "data" / "manifest.csv"
    if not manifest.exists():
        manifest = make_image_set(tmp / "data", n=24, size=40, subjects=12)
    run = tmp / "results" / "tiny" / "convnext-atto" / kind
    cfg = {
        "out_dir": str(run),
        "data": {"manifest": str(manifest), "img_size": SIZE, "batch_size": 8, "num_workers": 0},
        "model": {"name": "convnext-atto", "kwargs": {"depths": [1, 1, 1, 1]}},
        "logger": {"kind": kind, **logger},
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
        },
    }
    fit(from_dict(FitConfig, cfg))
    return run


@pytest.fixture(scope="module")
def csv_names(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("loggers")
    run = _fit(tmp, "csv")
    with (run / "logs" / "metrics.csv").open(encoding="utf-8") as f:
        names = set(next(csv.reader(f))) - {"epoch", "step"}
    assert names
    return names


def test_tensorboard_events_hold_the_csv_metric_names(tmp_path, request):
    pytest.importorskip("tensorboard")  # before the CSV fit: a missing package skips at once
    csv_names = request.getfixturevalue("csv_names")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _fit(tmp_path, "tensorboard")
    events = list((run / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert csv_names <= set(acc.Tags()["scalars"])


def test_mlflow_run_holds_the_csv_metric_names_under_the_run_folder(tmp_path, request):
    pytest.importorskip("mlflow")  # before the CSV fit: a missing package skips at once
    csv_names = request.getfixturevalue("csv_names")
    from mlflow.tracking import MlflowClient

    run = _fit(tmp_path, "mlflow")
    store = run / "logs" / "mlruns"
    assert store.is_dir()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "agebench"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert csv_names <= set(found.data.metrics)


def test_a_missing_logger_package_is_a_one_line_error(tmp_path, monkeypatch):
    import importlib.util

    from agebench import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    cfg = from_dict(FitConfig, {"logger": {"kind": "mlflow"}})
    with pytest.raises(
        UserError, match=r"^logger.kind mlflow needs the mlflow package: pip install 'agebench\[mlflow\]'$"
    ):
        train.build_logger(cfg, tmp_path)


def test_tracking_uri_at_its_default_leaves_config_hashes_unchanged():
    from agebench.config import config_hash, to_dict

    plain = to_dict(FitConfig())
    old = {**plain, "logger": {k: v for k, v in plain["logger"].items() if k != "tracking_uri"}}
    assert config_hash(plain) == config_hash(old)
    assert config_hash({**plain, "logger": {**plain["logger"], "tracking_uri": "sqlite:///x.db"}}) != config_hash(old)
