"""Variants and factor grids (issue 24): model entries with ``label:``, a top-level ``grid:`` crossed into labelled
cells, their rows grouped on the leaderboard with the factors as columns, and every config error before any cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_image_set

from agebench.bench.plan import expand, grid_label, load_bench_config
from agebench.cli import main
from agebench.errors import UserError

TINY = {
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1},
    "data": {"batch_size": 8, "num_workers": 0},
    "optim": {"lr": 1.0e-3},
    "profile": {"batch_size": 4, "warmup": 1, "iters": 2},
}
GRID = {"data.img_size": [32, 40], "model.freeze": ["none", "backbone"]}


def write(tmp_path: Path, models: list, grid: dict | None = GRID, **extra) -> Path:
    manifest = tmp_path / "data" / "manifest.csv"
    if not manifest.is_file():
        make_image_set(tmp_path / "data", n=36, size=40, subjects=12)
    config = {"models": models, "datasets": {"tiny": {"manifest": str(manifest)}}, **TINY, **extra}
    if grid is not None:
        config["grid"] = grid
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_grid_labels_are_folder_safe_and_show_the_values() -> None:
    label = grid_label("vit-tiny+coral", {"data.img_size": 64, "model.freeze": "backbone", "optim.lr": 0.001})
    assert label == "vit-tiny-coral,img_size=64,freeze=backbone,lr=0.001"
    assert "+" not in label and "@fold" not in label and "/" not in label
    both = grid_label("m", {"data.name": "a/b", "model.name": True})
    assert both == "m,data.name=a-b,model.name=true"  # same last part: the whole key


def test_two_by_two_grid_gives_four_labelled_cells_and_four_grouped_leaderboard_rows(tmp_path, capsys) -> None:
    config = write(tmp_path, ["convnext-atto"])
    results = tmp_path / "results"
    assert main(["bench", "--config", str(config), "--out", str(results), "--list"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == [
        "tiny/convnext-atto,img_size=32,freeze=none/seed0",
        "tiny/convnext-atto,img_size=32,freeze=backbone/seed0",
        "tiny/convnext-atto,img_size=40,freeze=none/seed0",
        "tiny/convnext-atto,img_size=40,freeze=backbone/seed0",
    ]
    assert main(["bench", "--config", str(config), "--out", str(results)]) == 0
    metrics = [json.loads(p.read_text()) for p in sorted(results.glob("tiny/*/seed0/metrics.json"))]
    assert len(metrics) == 4
    for m in metrics:
        assert m["variant_of"] == "convnext-atto" and set(m["factors"]) == set(GRID)
        assert (
            m["model"]
            == f"convnext-atto,img_size={m['factors']['data.img_size']},freeze={m['factors']['model.freeze']}"
        )
        assert m["tuning"]["freeze"] == m["factors"]["model.freeze"]
        frozen = m["tuning"]["freeze"] == "backbone"
        assert (m["tuning"]["trainable_params"] < m["params"] / 10) == frozen
    out = tmp_path / "board"
    assert (
        main(
            [
                "leaderboard",
                str(results),
                "--out",
                str(out),
                "--reference",
                "none",
                "--resamples",
                "200",
                "--permutations",
                "199",
            ]
        )
        == 0
    )
    assert "factor tiny/convnext-atto data.img_size: mean MAE" in capsys.readouterr().out  # the terminal lines
    doc = json.loads((out / "leaderboard.json").read_text())
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    assert len(rows) == 4 and {r["variant_of"] for r in rows} == {"convnext-atto"}
    assert {(r["factors"]["data.img_size"], r["factors"]["model.freeze"]) for r in rows} == {
        (32, "none"), (32, "backbone"), (40, "none"), (40, "backbone")
    }  # fmt: skip
    assert {e["factor"] for e in doc["factor_effects"]} == set(GRID)
    md = (out / "leaderboard.md").read_text()
    start = md.index("## Factor studies")
    section = md[start : md.index("\n## ", start)]
    assert "| variant | data.img_size | model.freeze | tuning | trainable (M) | MAE | rank |" in section
    assert section.count("| convnext-atto,img_size=") == 4 and "moved MAE most" in section


def test_grid_values_can_carry_a_label(tmp_path) -> None:
    grid = {"model.pretrained_path": [{"value": None, "label": "scratch"}, {"value": "w/best.ckpt", "label": "pre"}]}
    cells = expand(load_bench_config(write(tmp_path, ["convnext-atto"], grid=grid)), "r")
    assert [c.model for c in cells] == ["convnext-atto,pretrained_path=scratch", "convnext-atto,pretrained_path=pre"]
    assert [c.fit["model"]["pretrained_path"] for c in cells] == [None, "w/best.ckpt"]
    assert [c.factors for c in cells] == [{"model.pretrained_path": "scratch"}, {"model.pretrained_path": "pre"}]
    bad = write(tmp_path, ["convnext-atto"], grid={"model.pretrained_path": [{"value": None}]})
    with pytest.raises(UserError, match="needs exactly 'value' and a non-empty 'label'"):
        expand(load_bench_config(bad), "r")


def test_two_variants_of_one_model_by_label(tmp_path) -> None:
    config = write(
        tmp_path,
        ["convnext-atto", {"name": "convnext-atto", "label": "atto-probe", "model": {"freeze": "backbone"}}],
        grid=None,
    )
    cells = expand(load_bench_config(config), tmp_path / "r")
    assert [c.model for c in cells] == ["convnext-atto", "atto-probe"]
    assert cells[1].fit["model"]["freeze"] == "backbone" and cells[1].fit["out_dir"].endswith("atto-probe/seed0")
    # The label names the cell; it does not change what the cell computes.
    plain = expand(
        load_bench_config(write(tmp_path, [{"name": "convnext-atto", "model": {"freeze": "backbone"}}], grid=None)), "r"
    )
    assert plain[0].config_hash == cells[1].config_hash


@pytest.mark.parametrize(
    ("models", "grid", "message"),
    [
        (
            ["convnext-atto", {"name": "hybrid-atto", "label": "convnext-atto"}],
            None,
            "both make cell tiny/convnext-atto/seed0",
        ),
        (["convnext-atto", "convnext-atto"], None, "give one a label"),
        (["convnext-atto"], {"model.frezee": ["none"]}, "grid.model.frezee: unknown config key 'model.frezee'"),
        ([{"name": "convnext-atto", "data": {"img_size": 32}}], GRID, "sets data.img_size, which grid: varies"),
        (["convnext-atto"], {"model.freeze": ["none", "all"]}, "model.freeze='all': expected one of none, backbone"),
        (["convnext-atto"], {"data.img_size": [32, 0]}, "data.img_size=0: expected an integer >= 1"),
        (["convnext-atto"], {"data.img_size": []}, "grid.data.img_size: expected a non-empty list"),
        ([{"name": "convnext-atto", "label": "a@fold1"}], None, "no '@fold'"),
    ],
)
def test_bad_variants_and_grids_fail_in_one_line_before_any_cell(tmp_path, capsys, models, grid, message) -> None:
    config = write(tmp_path, models, grid=grid)
    results = tmp_path / "results"
    assert main(["bench", "--config", str(config), "--out", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not results.exists() or not any(results.rglob("cell.json"))
