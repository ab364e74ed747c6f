"""scripts/paper_dry_run.py's checks (the run itself is `make paper-dry-run`, about a minute: too slow here)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_dry_run.py"


@pytest.fixture(scope="module")
def dry():
    return runpy.run_path(str(SCRIPT), run_name="paper_dry_run")


def test_readme_parameter_counts_are_read_from_its_model_table(dry, tmp_path) -> None:
    assert dry["readme_params"]() == {"convnext": "28.02M", "vit": "86.00M", "hybrid": "33.57M"}
    readme = tmp_path / "README.md"
    readme.write_text(
        "| `vit` | ViT-B/16 | 86.00M |\n| hybrid (33.57M) | 9.47 |\n| `hybrid` | trunk | 1.50M (paper: 2M) |\n"
    )
    assert dry["readme_params"](readme) == {"vit": "86.00M", "hybrid": "1.50M"}


def test_precision_is_bf16_only_where_the_cpu_has_bf16(dry, tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nflags\t\t: fpu amx_bf16\n")
    flags = dry["bf16_flags"](str(cpuinfo))
    assert flags == ["amx_bf16", "avx512_bf16"]
    assert dry["choose_precision"]("auto", flags)[0] == "bf16-mixed"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    precision, why = dry["choose_precision"]("auto", dry["bf16_flags"](str(cpuinfo)))
    assert precision == "32-true" and "avx512_bf16" in why
    assert dry["bf16_flags"](str(tmp_path / "missing")) == []
    assert dry["choose_precision"]("32-true", ["avx512_bf16"])[0] == "32-true"


def _cell(tmp_path: Path, params: int, steps: int, n_pred: int) -> Path:
    cell = tmp_path / "synth" / "vit" / "seed0"
    (cell / "logs").mkdir(parents=True)
    rows = "".join(f"{i},0,{20.0 + i}\n" for i in range(steps)) + "1,0,\n"  # the epoch row has no step loss
    (cell / "logs" / "metrics.csv").write_text("step,epoch,train/loss_step\n" + rows)
    (cell / "predictions.csv").write_text("path,age,pred\n" + "".join(f"x{i}.jpg,30,31\n" for i in range(n_pred)))
    record = {"status": "ok", "params": params, "train_throughput": 2.0, "train_seconds": 3.0, "mae": 5.0}
    (cell / "metrics.json").write_text(json.dumps({**record, "provenance": {"precision": "bf16-mixed"}}))
    return cell


def test_a_cell_passes_only_with_readmes_count_both_steps_and_every_test_image(dry, tmp_path) -> None:
    problems, row = dry["check_cell"](_cell(tmp_path / "a", 85_995_777, 2, 4), "86.00M", 4, 2)
    assert problems == [] and "| vit | 85,995,777 (86.00M) | 86.00M | 2.00 s |" in row  # 2 x 2 images at 2 img/s
    problems, _ = dry["check_cell"](_cell(tmp_path / "b", 85_985_777, 1, 3), "86.00M", 4, 2)
    assert len(problems) == 3 and "README says 86.00M" in problems[0]
    assert "1 training steps" in problems[1] and "3 test predictions for 4" in problems[2]
    failed = tmp_path / "c"
    failed.mkdir()
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    assert dry["check_cell"](failed, "86.00M", 4, 2)[0] == [f"{failed}: status failed: boom"]
