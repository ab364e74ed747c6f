"""`agebench explain`: Grad-CAM on every model family, attention share on region masks, the failure report, the CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_image_set

from agebench.cli import main
from agebench.config import FitConfig, from_dict
from agebench.data.datamodule import AgeDataModule
from agebench.data.manifest import write_manifest
from agebench.data.synthetic_faces import EYE_CORNERS, EYES, FOREHEAD, HAIR, MOUTH, NASOLABIAL
from agebench.errors import UserError
from agebench.report import cam_targets, explain, failures

MODELS = ["convnext-atto", "vit-tiny", "hybrid-atto"]
SIZE = 64  # 32 px leaves ConvNeXt and the hybrid a 1x1 last map: a constant heat map explains nothing
N_FACES = 4
# Every image gets the same region mask, so the uniform baseline is known exactly (fractions of 64 x 64).
EXPECTED_AREA = {
    "hair": 12 * 64 / 4096,
    "forehead": 8 * 64 / 4096,
    "eye_corners": 2 * 4 * 8 / 4096,
    "nasolabial": 8 * 24 / 4096,
    "eyes": 6 * 32 / 4096,
    "mouth": 6 * 16 / 4096,
    "any": (16 * 64 + 2 * 4 * 8 + 8 * 24 + 6 * 32 + 6 * 16) / 4096,
}


def region_mask(size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[0:12] |= HAIR
    mask[8:16] |= FOREHEAD  # overlaps the hair on rows 8-11: bits may overlap
    mask[24:28, 4:12] |= EYE_CORNERS
    mask[24:28, 52:60] |= EYE_CORNERS
    mask[36:44, 20:44] |= NASOLABIAL
    mask[24:30, 16:48] |= EYES
    mask[46:52, 24:40] |= MOUTH
    return mask


def add_masks(manifest: Path, make_mask) -> Path:
    rows = list(csv.DictReader(open(manifest, newline="", encoding="utf-8")))
    for row in rows:
        row["mask"] = "masks/" + row["path"].rsplit(".", 1)[0] + ".png"
        file = manifest.parent / row["mask"]
        file.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(file), make_mask(row))
    return write_manifest(rows, manifest)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished 1-epoch run per model family on a tiny masked image set: RESULTS/tiny/<model>/seed0."""
    tmp = tmp_path_factory.mktemp("explain")
    manifest = add_masks(make_image_set(tmp / "data", n=24, size=SIZE, subjects=12), lambda row: region_mask())
    out = {}
    for name in MODELS:
        cfg = {
            "out_dir": str(tmp / "results" / "tiny" / name / "seed0"),
            "data": {"manifest": str(manifest), "img_size": SIZE, "batch_size": 8, "num_workers": 0},
            "model": {"name": name, "kwargs": {"depth": 2} if name == "vit-tiny" else {}},  # 2 blocks: fast
            "optim": {"lr": 1e-3},
            "logger": {"kind": "none"},
            "trainer": {
                "max_epochs": 1,
                "accelerator": "cpu",
                "devices": 1,
                "enable_progress_bar": False,
                "num_sanity_val_steps": 0,
            },
        }
        from agebench.train import fit

        fit(from_dict(FitConfig, cfg), dataset_name="tiny")
        out[name] = Path(cfg["out_dir"])
    return out


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_maps_have_the_input_size_and_vary(runs, name):
    run = explain.load_run(runs[name])
    paths = [run.data.records[i].path for i in explain.pick_faces(run.data.records, N_FACES)]
    exp = explain.explain_run(run, paths)
    expected_labels = ["encoder (last layer)", "trunk (last stage)"] if name == "hybrid-atto" else None
    assert expected_labels is None or [lm.label for lm in exp.layers] == expected_labels
    for lm in exp.layers:
        assert lm.maps.shape == (len(paths), SIZE, SIZE)
        assert np.isfinite(lm.maps).all() and lm.maps.min() >= 0 and lm.maps.max() <= 1
        lit = [m for m in lm.maps if m.max() > 0]
        assert lit, f"{name} {lm.label}: every map is zero"
        assert all(m.std() > 0 for m in lit), f"{name} {lm.label}: a constant map"
        # The CAM forward is the same model: its predictions are the run's test predictions.
        stored = {r["path"]: float(r["pred"]) for r in csv.DictReader(open(runs[name] / "predictions.csv"))}
        np.testing.assert_allclose(lm.preds, [stored[p] for p in paths], atol=1e-3)


def test_vit_reshape_reads_prefix_tokens_and_grid_from_the_model():
    from agebench.models import AgeRegressor
    from agebench.models.registry import create_timm_backbone

    model = AgeRegressor(model_config={"name": "vit-tiny", "img_size": 48, "depth": 2}).eval()
    (layer,) = cam_targets.cam_layers(model.backbone, 48)
    assert layer.grid == (6, 6)  # 48 px / 8 px patches, not the 224 px default's 14 x 14
    torch.manual_seed(0)
    (lm,) = explain.explain_model(model, torch.randn(2, 3, 48, 48))
    assert lm.maps.shape == (2, 48, 48) and lm.maps.std() > 0

    # Non-square grid and 4 register tokens (5 prefix tokens): token k must land at row k // 6, column k % 6.
    vit = create_timm_backbone("vit_tiny_patch16_224", img_size=(32, 48), patch_size=8, reg_tokens=4, depth=1)
    (layer,) = cam_targets.cam_layers(vit, (32, 48))
    assert vit.model.num_prefix_tokens == 5 and layer.grid == (4, 6)
    tokens = torch.zeros(1, 5 + 24, 3)
    tokens[0, 5:, 0] = torch.arange(24.0)
    tokens[0, :5, 0] = -1.0
    grid = layer.reshape(tokens)
    assert grid.shape == (1, 3, 4, 6)
    assert torch.equal(grid[0, 0], torch.arange(24.0).reshape(4, 6))
    with pytest.raises(ValueError, match="4x6 grid"):
        layer.reshape(torch.zeros(1, 5 + 20, 3))


def test_timm_convnets_are_explained_at_their_last_stage():
    from agebench.models import AgeRegressor

    model = AgeRegressor(model_config={"name": "timm:resnet18", "img_size": 64}).eval()
    torch.manual_seed(0)
    (lm,) = explain.explain_model(model, torch.randn(2, 3, 64, 64))
    assert (lm.label, lm.layer) == ("last stage", "backbone.model.layer4")
    assert lm.maps.shape == (2, 64, 64)


def test_attention_share_measures_mass_inside_regions():
    mask = region_mask()
    inside = ((mask & FOREHEAD) > 0).astype(np.float32)  # all mass on the forehead
    constant = np.ones_like(inside)
    flat = np.zeros_like(inside)
    result = cam_targets.attention_share(np.stack([inside, constant, flat]), [mask, mask, mask])
    assert result["n_images"] == 2 and result["n_flat"] == 1
    share, base = result["share"], result["uniform_baseline"]
    # forehead map: share 1 (forehead, any), 4 of its 8 rows overlap hair; constant map: share = area
    assert share["forehead"] == pytest.approx((1 + EXPECTED_AREA["forehead"]) / 2, abs=1e-6)
    assert share["hair"] == pytest.approx((0.5 + EXPECTED_AREA["hair"]) / 2, abs=1e-6)
    assert share["eye_corners"] == pytest.approx(EXPECTED_AREA["eye_corners"] / 2, abs=1e-6)
    assert base == pytest.approx(EXPECTED_AREA, abs=1e-6)


def test_attention_share_intervals_cover_the_share_and_say_when_it_beats_a_constant_map():
    mask = region_mask()
    inside = ((mask & FOREHEAD) > 0).astype(np.float32)
    rng = np.random.default_rng(0)
    # 40 maps: all mass on the forehead plus noise; 40 constant maps, which score exactly their region's area
    focused = np.stack([inside + 0.05 * rng.random(inside.shape, dtype=np.float32) for _ in range(40)])
    result = cam_targets.attention_share(focused, [mask] * 40)
    lo, hi = result["share_ci"]["forehead"]
    assert lo <= result["share"]["forehead"] <= hi and hi - lo < 0.05
    assert result["excess_ci"]["forehead"][0] > 0.5 and result["ci_level"] == 0.95
    constant = cam_targets.attention_share(np.ones((40, *inside.shape), np.float32), [mask] * 40)
    assert constant["excess_ci"]["any"] == pytest.approx([0.0, 0.0], abs=1e-9)  # the uniform share, exactly
    (line,) = cam_targets.format_attention([{"model": "m", "label": "l", **result}])
    assert "above uniform, excess CI [+" in line and "flat 0" in line
    one = cam_targets.attention_share(focused[:1], [mask])
    assert one["share_ci"]["any"] is None  # one image: no interval


def test_the_hybrid_encoder_is_explained_on_its_token_grid_and_its_trunk_alone_at_the_trunk():
    from agebench.models import build_model
    from agebench.report.cam_targets import cam_layers

    hybrid, _ = build_model("hybrid-atto", img_size=64, trunk_stages=3, pool="avg")
    encoder, trunk = cam_layers(hybrid, 64)
    assert (encoder.label, encoder.grid, trunk.label, trunk.grid) == (
        "encoder (output)",
        (4, 4),
        "trunk (last stage)",
        (4, 4),
    )
    assert encoder.reshape(torch.randn(2, 16, 160)).shape == (2, 160, 4, 4)
    alone, _ = build_model("hybrid-atto-trunk", img_size=64, trunk_stages=3)
    assert [(layer.label, layer.grid) for layer in cam_layers(alone, 64)] == [("trunk (last stage)", (4, 4))]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("hybrid-atto", {"trunk_stages": 3, "pool": "avg"}),
        ("vit-tiny", {"patch_size": 16, "depth": 2, "global_pool": "avg", "class_token": False}),
        ("vit-tiny", {"patch_size": 16, "depth": 2, "global_pool": "avg"}),  # class token kept, left out of the mean
    ],
)
def test_a_token_averaging_transformer_is_explained_at_the_tokens_its_head_averages(name, kwargs):
    """Grad-CAM there is CAM: the hooked map, averaged over the grid, is exactly the pooled feature the head reads."""
    from agebench.models import build_model
    from agebench.report.cam_targets import cam_layers

    backbone, _ = build_model(name, img_size=64, **kwargs)
    backbone.eval()
    layer = cam_layers(backbone, 64)[0]
    assert layer.label in ("encoder (output)", "output (token average)") and layer.grid == (4, 4)
    seen = []
    handle = layer.module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        pooled = backbone(x)
    handle.remove()
    grid = layer.reshape(seen[0])
    assert grid.shape[-2:] == (4, 4)
    mean = grid.mean(dim=(2, 3))
    model = getattr(backbone, "model", None)
    if model is not None:  # a timm ViT normalises after pooling (fc_norm)
        mean = model.fc_norm(mean)
    torch.testing.assert_close(mean, pooled)


def test_a_class_token_transformer_is_explained_before_its_last_layer():
    """With a class token only that token reaches the head after the last layer: its input is explained instead."""
    from agebench.models import build_model
    from agebench.report.cam_targets import cam_layers

    hybrid, _ = build_model("hybrid-atto", img_size=64, trunk_stages=3)
    assert cam_layers(hybrid, 64)[0].module is hybrid.encoder.layers[-1].norm1
    vit, _ = build_model("vit-tiny", img_size=64, patch_size=16, depth=2)
    assert cam_layers(vit, 64)[0].module is vit.model.blocks[-1].norm1


def test_hirescam_equals_gradcam_where_the_head_averages_the_map_and_differs_before_a_class_token():
    """Where every position gets the head's gradient / N (a convnet's last stage, an averaging encoder's output)
    gradient x activation per position is Grad-CAM's map; before a class-token layer the gradients differ by token."""
    from agebench.models import AgeRegressor

    torch.manual_seed(0)
    images = torch.randn(4, 3, SIZE, SIZE)
    configs = {
        "convnext-atto": {"ls_init_value": 1.0},
        "hybrid-atto": {"trunk_stages": 3, "pool": "avg"},
        "vit-tiny": {"patch_size": 16, "depth": 2},
    }
    for name, kwargs in configs.items():
        model = AgeRegressor(model_config={"name": name, "img_size": SIZE, **kwargs}).eval()
        grad = explain.explain_model(model, images, name, method="gradcam")[0]
        hires = explain.explain_model(model, images, name, method="hirescam")[0]
        assert grad.label == hires.label and (grad.maps.max(axis=(1, 2)) > 0).all(), name
        np.testing.assert_allclose(grad.preds, hires.preds, atol=1e-5)
        if name == "vit-tiny":
            assert np.abs(grad.maps - hires.maps).max() > 0.1, "class-token ViT: the two maps should differ"
        else:
            np.testing.assert_allclose(grad.maps, hires.maps, atol=1e-4, err_msg=name)
    with pytest.raises(UserError, match="gradcam, hirescam, occlusion"):
        explain.explain_model(model, images, "vit-tiny", method="scorecam")


def test_masks_follow_the_image_through_resize_and_centre_crop(tmp_path):
    """A non-square image is resized and centre-cropped: the nearest-neighbour mask must stay on the same pixels."""
    rows = []
    for i, split in enumerate(["train", "val", "test"]):
        image = np.zeros((80, 120, 3), np.uint8)
        image[10 + i : 50, 5:40] = 255  # partly in the strip the centre crop removes
        mask = np.zeros((80, 120), np.uint8)
        mask[10 + i : 50, 5:40] = FOREHEAD | HAIR
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"m{i}.png"), mask)
        rows.append({"path": f"{i}.png", "age": 30, "subject_id": f"s{i}", "split": split, "mask": f"m{i}.png"})
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    dm = AgeDataModule(manifest, img_size=32, use_cache=False)
    dm.setup()
    run = explain.Run("m", "d", None, dm.datasets["test"], dm.manifest, None)
    face = explain.load_face(run, 0)
    assert face.mask.shape == face.display.shape[:2] == (32, 32)
    assert set(np.unique(face.mask)) <= {0, FOREHEAD | HAIR}  # nearest neighbour: no blended bit values
    bright = face.display.mean(axis=2)
    sure = (bright > 0.9) | (bright < 0.1)  # away from the image's interpolated edges
    assert sure.mean() > 0.8
    assert np.array_equal((face.mask > 0)[sure], (bright > 0.5)[sure])


def test_explain_writes_grid_and_attention_json_with_exact_baseline(runs, tmp_path):
    loaded = [explain.load_run(runs[name]) for name in MODELS]
    written = explain.explain(loaded, n=N_FACES, out=tmp_path / "compare")
    assert tmp_path / "compare" / "gradcam.png" in written
    for name in MODELS:
        assert (runs[name] / "explain" / "gradcam.png").stat().st_size > 0
    entries = json.loads((tmp_path / "compare" / "attention.json").read_text())
    assert [(e["model"], e["label"]) for e in entries] == [
        ("convnext-atto", "last stage"),
        ("vit-tiny", "last block"),
        ("hybrid-atto", "encoder (last layer)"),
        ("hybrid-atto", "trunk (last stage)"),
    ]
    for e in entries:
        assert e["dataset"] == "tiny" and e["layer"].startswith("backbone.")
        assert e["n_images"] + e["n_flat"] == N_FACES
        assert e["uniform_baseline"] == pytest.approx(EXPECTED_AREA, abs=1e-6)
        assert all(0 <= v <= 1 for v in e["share"].values() if v is not None)
    own = json.loads((runs["hybrid-atto"] / "explain" / "attention.json").read_text())
    assert own == entries[2:]


def test_failure_report_lists_worst_cases_by_absolute_error(runs):
    run = runs["convnext-atto"]
    report = failures.write_failure_report(run, n=3)
    assert report.report == run / "failure_report.md"
    assert report.worst_png.stat().st_size > 0 and report.groups_png.stat().st_size > 0
    preds = list(csv.DictReader(open(run / "predictions.csv")))
    expected = sorted(preds, key=lambda r: -abs(float(r["pred"]) - float(r["age"])))[:3]
    text = report.report.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert [line.split("`")[1] for line in table] == [r["path"] for r in expected]
    errors = [abs(float(line.split("|")[5])) for line in table]
    assert errors == sorted(errors, reverse=True)
    assert "## MAE by age group" in text and "## Data imbalance" in text
    assert "explain/worst_cases.png" in text and "explain/mae_by_age.png" in text


def test_imbalance_flags_rare_groups_with_high_mae():
    metrics = {
        "mae": 4.0,
        "mae_by_age_group": {
            "20-29": {"mae": 3.0, "n": 50},
            "30-39": {"mae": 3.5, "n": 40},
            "70+": {"mae": 12.0, "n": 5},
        },
        "train_age_histogram": {"edges": list(range(0, 130, 10)), "counts": [0, 0, 200, 150, 0, 0, 0, 3, 1, 0, 0, 0]},
    }
    preds = [failures.Prediction("a", 75, 60), failures.Prediction("b", 25, 27)]
    groups = {g.name: g for g in failures.age_groups(metrics, preds)}
    assert groups["70+"].flagged and groups["70+"].n_train == 4 and groups["70+"].bias == -15
    assert not groups["20-29"].flagged and not groups["30-39"].flagged
    ties = [failures.Prediction("b", 10, 12), failures.Prediction("a", 10, 8), failures.Prediction("c", 10, 10)]
    assert [p.path for p in failures.worst_cases(ties, 2)] == ["a", "b"]


def test_cli_explains_a_run_and_writes_the_failure_report(runs, capsys):
    run = runs["vit-tiny"]
    assert main(["explain", "--run", str(run), "--n", "2", "--worst", "2"]) == 0
    out = capsys.readouterr().out
    assert "of Grad-CAM mass in age-cue regions" in out
    for rel in ("failure_report.md", "explain/gradcam.png", "explain/attention.json", "explain/worst_cases.png"):
        assert (run / rel).is_file(), rel


def test_cli_method_hirescam_is_recorded_and_printed(runs, tmp_path, capsys):
    from agebench.cli.explain import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert [parser.parse_args(["--method", m]).method for m in cam_targets.METHODS] == list(cam_targets.METHODS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "scorecam"])
    out = tmp_path / "hires"
    argv = ["explain", "--run", str(runs["vit-tiny"]), "--n", "2", "--no-failures", "--method", "hirescam"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "of HiResCAM mass in age-cue regions" in capsys.readouterr().out
    assert [e["method"] for e in json.loads((out / "attention.json").read_text())] == ["hirescam"]


def test_cli_occlusion_joins_attention_json_and_keeps_grad_cam_entries(runs, tmp_path, capsys):
    """Occlusion writes occlusion.png and adds its own entries; Grad-CAM's, from an earlier run, stay."""
    out = tmp_path / "occ"
    base = ["explain", "--run", str(runs["convnext-atto"]), "--run", str(runs["vit-tiny"]), "--n", "2"]
    assert main([*base, "--no-failures", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*base, "--no-failures", "--out", str(out), "--method", "occlusion", "--window", "16"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("of occlusion mass in age-cue regions") == 2 and "Grad-CAM mass" not in printed
    assert (out / "occlusion.png").stat().st_size > 0 and (out / "gradcam.png").is_file()
    entries = json.loads((out / "attention.json").read_text())
    assert [(e["model"], e["method"], e["label"]) for e in entries] == [
        ("convnext-atto", "gradcam", "last stage"),
        ("vit-tiny", "gradcam", "last block"),
        ("convnext-atto", "occlusion", "input (occlusion 16 px, stride 8)"),
        ("vit-tiny", "occlusion", "input (occlusion 16 px, stride 8)"),
    ]
    assert all(e["layer"] == "input" and e["n_images"] + e["n_flat"] == 2 for e in entries[2:])
    assert main([*base, "--no-failures", "--out", str(out), "--method", "occlusion"]) == 0  # replaces its own
    entries = json.loads((out / "attention.json").read_text())
    assert [e["label"] for e in entries if e["method"] == "occlusion"] == ["input (occlusion 8 px, stride 4)"] * 2
    assert main([*base, "--out", str(out), "--window", "8"]) == 2
    assert "--method occlusion" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--method", "occlusion", "--window", "80"]) == 2
    assert "window 80" in capsys.readouterr().err


def test_control_scores_the_untrained_twin_next_to_the_trained_model(runs, tmp_path, capsys):
    from agebench.runs import untrained_like

    run = explain.load_run(runs["convnext-atto"])
    state = torch.random.get_rng_state()
    twin, again = untrained_like(run.model), untrained_like(run.model)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched
    trained, fresh, fresh2 = (dict(m.state_dict()) for m in (run.model, twin, again))
    assert trained.keys() == fresh.keys() and all(torch.equal(fresh[k], fresh2[k]) for k in fresh)
    assert not torch.equal(trained["backbone.model.stem.0.weight"], fresh["backbone.model.stem.0.weight"])
    assert torch.equal(trained["head.age_mean"], fresh["head.age_mean"])  # the run's age normalisation kept
    out = tmp_path / "control"
    argv = ["explain", "--run", str(runs["convnext-atto"]), "--n", "3", "--no-failures", "--control"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "convnext-atto (untrained) [last stage]:" in printed and "points over its untrained twin" in printed
    entries = json.loads((out / "attention.json").read_text())
    assert [(e["label"], e.get("control")) for e in entries] == [("last stage", None), ("last stage", "untrained")]
    trained, untrained = entries
    assert trained["share"] != untrained["share"] and "vs_control" not in untrained
    vs = trained["vs_control"]
    if vs["n_images"] == 3:  # no flat map: the paired mean is the difference of the two means
        assert vs["difference"]["any"] == pytest.approx(trained["share"]["any"] - untrained["share"]["any"], abs=1e-5)
    lo, hi = vs["difference_ci"]["any"]
    assert lo <= vs["difference"]["any"] <= hi


def test_occlusion_predictions_are_the_runs_own(runs):
    run = explain.load_run(runs["hybrid-atto"])
    paths = [run.data.records[i].path for i in explain.pick_faces(run.data.records, N_FACES)]
    (lm,) = explain.explain_run(run, paths, method="occlusion", window=16, stride=16).layers
    assert lm.maps.shape == (len(paths), SIZE, SIZE) and 0 <= lm.maps.min() and lm.maps.max() <= 1
    stored = {r["path"]: float(r["pred"]) for r in csv.DictReader(open(runs["hybrid-atto"] / "predictions.csv"))}
    np.testing.assert_allclose(lm.preds, [stored[p] for p in paths], atol=1e-3)


def test_cli_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["explain", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "not found" in err
    assert main(["explain", "--run", str(tmp_path), "--run", str(tmp_path)]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["explain", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # exists, no config.yaml
    assert "config.yaml" in capsys.readouterr().err
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    argv = ["explain", "--checkpoint", str(tmp_path / "bad.ckpt"), "--manifest", "m.csv", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert main(["explain", "--checkpoint", str(tmp_path / "x.ckpt")]) == 2
    assert "--manifest" in capsys.readouterr().err


@pytest.mark.slow
def test_attention_share_on_the_synthetic_set(tmp_path):
    """End to end on the embedded generator's masks: every share is a valid fraction, baselines are mask areas."""
    from agebench.data.synthetic import generate
    from agebench.train import fit

    manifest = generate(tmp_path / "synth", n=80, size=SIZE, masks=True, workers=1, progress=False)
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "data": {"manifest": str(manifest), "img_size": SIZE, "batch_size": 16, "num_workers": 0},
        "model": {"name": "hybrid-atto"},
        "logger": {"kind": "none"},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    fit(from_dict(FitConfig, cfg), dataset_name="synth")
    explain.explain([explain.load_run(tmp_path / "run")], n=6)
    entries = json.loads((tmp_path / "run" / "explain" / "attention.json").read_text())
    assert len(entries) == 2
    for e in entries:
        base = e["uniform_baseline"]
        assert 0 < base["any"] < 1 and base["any"] >= max(base[k] for k in cam_targets.REGIONS)
        assert all(0 <= v <= 1 for v in e["share"].values() if v is not None)


def test_small_images_are_explained_at_the_deepest_stage_with_a_spatial_map():
    """At 48 px ConvNeXt's last map is 1 x 1 (a uniform heat map): the stage before it (3 x 3) is explained."""
    from agebench.models import build_model
    from agebench.report.cam_targets import cam_layers

    backbone, _ = build_model("convnext-atto", img_size=48)
    (layer,) = cam_layers(backbone, 48)
    assert (layer.label, layer.grid) == ("stage 3 of 4", (3, 3))
    assert layer.module is backbone.model.stages[2]
    (layer,) = cam_layers(build_model("convnext-atto", img_size=64)[0], 64)
    assert (layer.label, layer.grid) == ("last stage", (2, 2))
    hybrid, _ = build_model("hybrid-atto", img_size=48)
    assert [lm.label for lm in cam_layers(hybrid, 48)] == ["encoder (last layer)", "trunk (stage 3 of 4)"]


def test_control_difference_pairs_images_and_resolves_a_real_shift():
    """Trained maps on the region, untrained maps off it: the paired difference is the full shift, resolved."""
    rng = np.random.default_rng(0)
    mask = region_mask()
    masks = [mask] * 12
    forehead = (mask & FOREHEAD) > 0
    trained = rng.uniform(0, 0.1, (12, SIZE, SIZE)).astype(np.float32)
    trained[:, forehead] += 1
    untrained = rng.uniform(0, 1, (12, SIZE, SIZE)).astype(np.float32)
    untrained[0] = 0  # flat in the control: that image is left out of the pairs
    vs = cam_targets.control_difference(trained, untrained, masks)
    assert vs["n_images"] == 11
    a = cam_targets.attention_share(trained[1:], masks[1:])
    b = cam_targets.attention_share(untrained[1:], masks[1:])
    assert vs["difference"]["forehead"] == pytest.approx(a["share"]["forehead"] - b["share"]["forehead"], abs=1e-5)
    assert vs["difference_ci"]["forehead"][0] > 0.5 and vs["difference_ci"]["mouth"][1] < 0
    same = cam_targets.control_difference(trained, trained, masks)
    assert same["difference"]["any"] == 0 and same["difference_ci"]["any"] == [0, 0]
