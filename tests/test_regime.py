"""The backbone regime declaration: what attention or the last map sees at an image size, for every registered
backbone, and the ``degenerate`` flag it drives from metrics.json to the leaderboard."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_image_set

from agebench.cli import main
from agebench.models import Regime, backbone_regime, create_backbone, get_backbone_spec, list_backbones

BUILTINS = [n for n in list_backbones() if get_backbone_spec(n).source == "builtin"]
SMALL = [n for n in BUILTINS if get_backbone_spec(n).small]
FULL = [n for n in BUILTINS if not get_backbone_spec(n).small]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def observed(backbone: torch.nn.Module, size: int) -> tuple[int | None, tuple[int, int] | int]:
    """(tokens after prefix tokens, map grid or token count) read off the features the backbone computes."""
    with torch.no_grad():
        feats = backbone.eval().forward_features(torch.zeros(1, 3, size, size))
    if feats.ndim == 4:
        return None, (int(feats.shape[-2]), int(feats.shape[-1]))
    inner = getattr(backbone, "model", backbone)
    prefix = int(getattr(inner, "num_prefix_tokens", 0))
    return int(feats.shape[1]) - prefix, int(feats.shape[1]) - prefix


def check_declared(name: str, size: int, **kwargs) -> Regime:
    backbone = create_backbone(name, img_size=size, **kwargs)
    regime = backbone_regime(backbone, size)
    assert regime is not None, f"{name} declares no regime"
    tokens, grid = observed(backbone, size)
    if isinstance(grid, tuple):
        assert regime.grid == grid and regime.mechanism == "convolution"
    else:  # a token sequence: its length is the declared grid, and attention sees exactly those tokens
        assert regime.grid[0] * regime.grid[1] == grid
        if regime.mechanism == "attention":
            assert regime.tokens == tokens
    return regime


@pytest.mark.parametrize("size", [32, 64, 96])
@pytest.mark.parametrize("name", SMALL)
def test_every_small_builtin_declares_the_regime_its_features_show(name: str, size: int) -> None:
    check_declared(name, size)


@pytest.mark.parametrize("name", FULL)
def test_every_full_size_builtin_declares_its_regime_at_224(name: str) -> None:
    regime = check_declared(name, 224)
    assert regime.degenerate is None


def test_the_papers_hybrid_attends_over_its_7x7_grid_and_vit_b_over_196_patches() -> None:
    assert backbone_regime(create_backbone("hybrid"), 224) == Regime("attention", (7, 7), 49)
    assert backbone_regime(create_backbone("vit", img_size=224), 224) == Regime("attention", (14, 14), 196)


def test_timm_backbones_declare_from_timms_own_description() -> None:
    assert check_declared("timm:resnet10t", 64).grid == (2, 2)
    assert check_declared("timm:vit_tiny_patch16_224", 64).tokens == 16


def test_the_small_hybrid_keeps_a_finer_grid_without_its_last_downsampling() -> None:
    assert check_declared("hybrid-atto", 64) == Regime("attention", (2, 2), 4)
    assert check_declared("hybrid-atto", 64, last_downsample=False) == Regime("attention", (4, 4), 16)
    whole, kept = create_backbone("hybrid-atto", img_size=64), create_backbone("hybrid-atto", last_downsample=False)
    shapes = [(k, tuple(v.shape)) for k, v in whole.trunk.state_dict().items()]
    assert shapes == [(k, tuple(v.shape)) for k, v in kept.trunk.state_dict().items()]  # the same trunk weights
    assert check_declared("hybrid-atto-trunk", 64, last_downsample=False) == Regime("convolution", (4, 4))
    assert check_declared("hybrid-atto", 64, trunk_stages=3) == Regime("attention", (4, 4), 16)
    assert check_declared("hybrid-atto-trunk", 64, trunk_stages=3) == Regime("convolution", (4, 4))
    with pytest.raises(ValueError, match="trunk_stages must be in 1..4"):
        create_backbone("hybrid-atto", img_size=64, trunk_stages=5)


def test_degenerate_means_the_mechanism_is_off() -> None:
    assert Regime("attention", (1, 1), 1).degenerate == "attention over 1 token(s) (< 4)"
    assert Regime("attention", (2, 1), 2).degenerate is not None
    assert Regime("attention", (2, 2), 4).degenerate is None
    assert Regime("convolution", (1, 1)).degenerate == "last feature map 1x1 (< 2x2)"
    assert Regime("convolution", (2, 2)).degenerate is None
    assert backbone_regime(torch.nn.Linear(2, 2), 64) is None  # no declaration: unknown, never flagged


def test_a_degenerate_bench_is_warned_before_it_runs_and_flagged_on_the_leaderboard(tmp_path, capsys) -> None:
    import yaml

    manifest = make_image_set(tmp_path / "data", n=24, size=40, subjects=12)
    config = {
        "models": ["hybrid-atto", {"name": "hybrid-atto-trunk", "model": {"ablation_of": "hybrid-atto"}}],
        "datasets": {"tiny": {"manifest": str(manifest)}},
        "seeds": [0],
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "num_sanity_val_steps": 0},
        "data": {"img_size": 32, "batch_size": 8, "num_workers": 0},
        "profile": {"batch_size": 2, "warmup": 1, "iters": 1},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    assert main(["bench", "--config", str(tmp_path / "bench.yaml"), "--out", str(results)]) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "is degenerate" in line]
    assert any("'hybrid-atto' at 32 px is degenerate (attention over 1 token(s) (< 4))" in w for w in warned)
    assert any("'hybrid-atto-trunk' at 32 px is degenerate (last feature map 1x1" in w for w in warned)
    metrics = json.loads((results / "tiny" / "hybrid-atto" / "seed0" / "metrics.json").read_text())
    assert metrics["regime"] == {
        "mechanism": "attention",
        "tokens": 1,
        "grid": [1, 1],
        "degenerate": "attention over 1 token(s) (< 4)",
    }
    assert main(["leaderboard", str(results), "--format", "json", "--out", str(tmp_path / "board.json")]) == 0
    board = json.loads((tmp_path / "board.json").read_text())
    rows = {r["model"]: r for r in board["rows"] if r["status"] == "ok"}
    assert "degenerate" in rows["hybrid-atto"]["flags"] and rows["hybrid-atto"]["regime"]["tokens"] == 1
    (ablation,) = board["ablations"]
    assert (ablation["full"], ablation["ablation"], ablation["reason"]) == ("hybrid-atto", "hybrid-atto-trunk", None)
    pair = next(p for p in board["statistics"]["datasets"]["tiny"]["pairs"])
    sign = 1 if pair["a"] == "hybrid-atto [degenerate]" else -1
    assert ablation["delta_mae"] == pytest.approx(sign * pair["delta_mae"], abs=1e-6)
    assert main(["leaderboard", str(results), "--format", "md", "--out", str(tmp_path / "board.md")]) == 0
    md = (tmp_path / "board.md").read_text()
    assert "| regime |" in md and "1 tokens (1x1)" in md and "grid 1x1" in md and "## Ablations" in md


UNDECLARED = textwrap.dedent(
    '''
    from torch import nn


    class Pooled(nn.Module):
        """A third-party backbone that knows nothing of regimes."""

        def __init__(self) -> None:
            super().__init__()
            self.num_features = 8
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.body(x)


    def make() -> Pooled:
        return Pooled()
    '''
)


def test_an_undeclared_third_party_backbone_trains_and_shows_unknown(tmp_path, monkeypatch) -> None:
    from agebench.config import FitConfig, from_dict
    from agebench.report.folds import load_cells
    from agebench.report.leaderboard import build_rows
    from agebench.train import fit

    site = tmp_path / "site"
    info = site / "agebench_undeclared-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agebench-undeclared\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[agebench.backbones]\nundeclared-net = agebench_undeclared:make\n")
    (site / "agebench_undeclared.py").write_text(UNDECLARED)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "agebench_undeclared", raising=False)
    manifest = make_image_set(tmp_path / "data", n=24, size=40, subjects=12)
    run = tmp_path / "results" / "tiny" / "undeclared-net" / "seed0"
    cfg = {
        "out_dir": str(run),
        "data": {"manifest": str(manifest), "img_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"name": "undeclared-net"},
        "logger": {"kind": "none"},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "num_sanity_val_steps": 0},
    }
    metrics = fit(from_dict(FitConfig, cfg))
    assert metrics["regime"] is None and Path(run / "metrics.json").exists()
    (row,) = build_rows(load_cells(tmp_path / "results"), reference="none")
    assert row.display()["regime"] == "unknown" and "degenerate" not in row.flags
