"""The speed scripts run end to end on CPU at tiny sizes (their GPU figures are measured on a GPU machine)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from agebench.bench.profile import profile_model
from agebench.models import build_model

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


def test_gpu_throughput_script_on_cpu(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "figures.json"
    args = ["--tiny", "--workers", "0", "--no-latency", "--models", "convnext-atto", "--json", str(out)]
    run_script("gpu_throughput.py", args, monkeypatch)
    figures = json.loads(out.read_text())
    (row,) = figures["throughput"]
    assert row["model"] == "convnext-atto" and row["model_only"] > 0 and row["loader"] > 0
    assert row["ratio"] == pytest.approx(row["loader"] / row["model_only"])
    assert "(b)/(a)" in capsys.readouterr().out


def test_loader_throughput_training_mode_prints_the_workers_table(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "loader.json"
    args = ["--train", "--n", "12", "--batch-size", "4", "--size", "32", "--cache-size", "40", "--jpeg-side", "48"]
    with pytest.raises(SystemExit) as done:
        run_script(
            "loader_throughput.py", [*args, "--epochs", "1", "--worker-counts", "1,2", "--json", str(out)], monkeypatch
        )
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "experiments/paper/morph2.yaml: 32 px, batch 4, augment scale_min 0.8" in printed
    table = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| ") and "px" in line]
    assert [(r[0].strip(), int(r[1])) for r in table] == [
        ("JPEG decode + augment -> 32 px", 1),
        ("JPEG decode + augment -> 32 px", 2),
        ("uint8 cache 40 px + augment -> 32 px", 1),
        ("uint8 cache 40 px + augment -> 32 px", 2),
    ]
    figures = json.loads(out.read_text())
    assert (figures["img_size"], figures["cache_size"], figures["batch_size"], figures["images"]) == (32, 40, 4, 12)
    for row, printed_row in zip(figures["rows"], table, strict=True):
        assert row["images_per_second"] > 0 and row["worker_cpu_ms"] > 0 and row["main_cpu_ms"] >= 0
        assert float(printed_row[6]) == pytest.approx(row["worker_cpu_ms"], abs=0.006)
        assert row["per_worker"] == pytest.approx(row["images_per_second"] / row["workers"])
        need = {int(k): v for k, v in row["workers_for"].items()}
        assert need == {1000: math.ceil(1000 / row["per_worker"]), 3000: math.ceil(3000 / row["per_worker"])}
        assert [int(printed_row[4]), int(printed_row[5])] == [need[1000], need[3000]]


def test_lightning_overhead_script_prints_the_ratio(monkeypatch, capsys) -> None:
    args = ["--img-size", "32", "--batch-size", "8", "--steps", "3", "--warmup", "1", "--repeats", "1"]
    run_script("lightning_overhead.py", args, monkeypatch)
    out = capsys.readouterr().out
    ratio = float(out.split("Lightning / bare")[1].split()[0])
    assert ratio > 0


def test_profile_compile_times_the_compiled_model_and_records_the_mode(monkeypatch) -> None:
    calls = []

    def fake_compile(model, mode=None):  # the real compile takes ~30 s on CPU: see the slow test
        calls.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = torch.nn.Sequential(*build_model("convnext-atto", img_size=32))
    result = profile_model(net, img_size=32, batch_size=2, warmup=0, iters=1, compile_mode="reduce-overhead")
    assert calls == ["reduce-overhead"]
    assert result["profile"]["compile"] == "reduce-overhead" and result["profile"]["compile_seconds"] > 0
    plain = profile_model(net, img_size=32, batch_size=2, warmup=0, iters=1)
    assert plain["profile"]["compile"] is None and plain["profile"]["compile_seconds"] is None


@pytest.mark.slow
def test_profile_compile_for_real_on_cpu(capsys) -> None:
    from agebench.cli import main

    args = ["profile", "--model", "convnext-atto", "--img-size", "32", "--batch-size", "2", "--warmup", "1"]
    assert main([*args, "--iters", "2", "--compile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["profile"]["compile"] == "reduce-overhead" and result["latency_ms"] > 0
