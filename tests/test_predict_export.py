"""`agebench predict` and `agebench export`: one row per image, bad images named, TTA, parity of exported models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import make_image_set

from agebench import export, predict
from agebench.cli import main
from agebench.config import FitConfig, config_hash, from_dict, to_dict
from agebench.data import faces
from agebench.data.images import read_rgb
from agebench.data.synthetic import render_with_landmarks
from agebench.data.synthetic_faces import sample_traits

SIZE = 32
# One block per stage (ViT: two): the same operators as the bench's models, a fraction of the graph to trace.
MODELS = {
    "convnext-atto": {"depths": (1, 1, 1, 1)},
    "vit-tiny": {"depth": 2},
    "hybrid-atto": {"trunk_kwargs": {"depths": (1, 1, 1, 1)}},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """A result folder per model family with a freshly initialised checkpoint in Lightning's format
    (hyper_parameters + state_dict) and the config.yaml data section: all predict and export read. Training
    would change the weights, not what is tested (a trained run is exported in test_fit_records_tta, slow)."""
    from agebench.models import AgeRegressor

    tmp = tmp_path_factory.mktemp("predict")
    manifest = make_image_set(tmp / "data", n=24, size=40, subjects=12)
    data = {"manifest": str(manifest), "img_size": SIZE, "batch_size": 8, "num_workers": 0, "crop_pct": 0.875}
    out = {}
    for name, kwargs in MODELS.items():
        run = tmp / "results" / "tiny" / name / "seed0"
        torch.manual_seed(0)
        module = AgeRegressor.from_config({"name": name, "img_size": SIZE, **kwargs})
        (run / "checkpoints").mkdir(parents=True)
        state = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
        torch.save(state, run / "checkpoints" / "best.ckpt")
        (run / "config.yaml").write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
        out[name] = (run, module.eval())
    return out


@pytest.fixture(scope="module")
def runs(built) -> dict[str, Path]:
    return {name: run for name, (run, _) in built.items()}


@pytest.fixture(scope="module")
def loaded(built) -> dict[str, predict.LoadedRun]:
    """Each run with the module it was saved from (predict.load reads it back in the CLI tests)."""
    return {name: predict.load(run, model=module) for name, (run, module) in built.items()}


@pytest.fixture(scope="module")
def test_images(runs) -> list[np.ndarray]:
    """The test split's images of the tiny set (4 of them)."""
    manifest = Path(yaml.safe_load((runs["vit-tiny"] / "config.yaml").read_text())["data"]["manifest"])
    rows = [r for r in csv.DictReader(manifest.open(encoding="utf-8")) if r["split"] == "test"]
    return [read_rgb(manifest.parent / r["path"]) for r in rows]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five small images in two folders, and one truncated JPEG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        sub = root / ("a" if i < 3 else "b")
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i}.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    ok, jpg = cv2.imencode(".jpg", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    (root / "b" / "broken.jpg").write_bytes(jpg.tobytes()[:200])
    return root


# Every family in every format, in the default run: the small variants at 32 px take 0.2-4 s a case on a CPU.
CASES = [(name, fmt) for fmt in export.FORMATS for name in MODELS]


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_exported_model_agrees_with_the_checkpoint(loaded, test_images, tmp_path, name, fmt):
    out = tmp_path / f"model{export.FORMATS[fmt].suffix}"
    # Traced with a batch of 2, checked on 4: the batch size stays free.
    result = export.export(loaded[name], fmt, out, test_images)
    assert result.n_images == len(test_images) == 4
    assert result.ok and result.max_abs_diff <= export.TOLERANCE
    assert np.ptp(result.reference) > 0  # different images, different ages: the check compares something


def test_export_cli_prints_the_parity_on_the_run_test_images(runs, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--run", str(runs["vit-tiny"]), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vit-tiny -> torchscript: max |exported - checkpoint|" in printed
    assert "years on 4 test images: ok" in printed and f"wrote {out}" in printed


def test_export_metadata_holds_the_preprocessing_constants(loaded, test_images, tmp_path):
    out = tmp_path / "m.pt"
    export.export(loaded["vit-tiny"], "torchscript", out, test_images[:1])
    extra = {"agebench.json": ""}
    torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["agebench.json"])
    assert meta["img_size"] == SIZE and meta["crop_pct"] == 0.875 and meta["resize_short_side_to"] == 37
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]


def test_pt2_metadata_holds_the_preprocessing_constants(loaded, test_images, tmp_path):
    out = tmp_path / "m.pt2"
    assert export.export(loaded["hybrid-atto"], "exported", out, test_images[:1]).ok
    extra = {"agebench.json": ""}
    torch.export.load(str(out), extra_files=extra)
    meta = json.loads(extra["agebench.json"])
    assert meta["img_size"] == SIZE and meta["mean"] == [0.485, 0.456, 0.406]


def test_a_failing_exporter_is_a_one_line_error_suggesting_another_format(loaded, test_images, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::foo\nlong traceback")

    monkeypatch.setattr(torch.export, "export", broken)
    with pytest.raises(export.UserError) as err:
        export.export(loaded["hybrid-atto"], "exported", tmp_path / "m.pt2", test_images)
    message = str(err.value)
    assert "\n" not in message and message.startswith("hybrid-atto cannot be exported to exported")
    assert "try --format torchscript or onnx" in message


def test_export_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    assert main(["export", "--run", str(runs["vit-tiny"]), "--format", "tflite"]) == 2
    assert "expected one of torchscript, onnx, exported" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a))
    assert main(["export", "--run", str(runs["vit-tiny"]), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["agebench export: error: --format onnx needs the onnx package: pip install 'agebench[export]'"]


def test_predict_writes_one_row_per_image_once_and_names_a_corrupt_one(runs, folder, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    # The folder, one of its files again, and a subfolder again: each image must still appear once.
    argv = ["predict", "--run", str(runs["vit-tiny"]), str(folder), str(folder / "a" / "0.png"), str(folder / "b")]
    assert main([*argv, "--out", str(out), "--workers", "0"]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == predict.COLUMNS
    assert sorted(Path(r["path"]).name for r in rows) == ["0.png", "1.png", "2.png", "3.png", "4.png", "broken.jpg"]
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert broken[0]["age"] == "" and "truncated" in broken[0]["error"]
    assert all(float(r["age"]) == float(r["age"]) and r["error"] == "" for r in rows if r is not broken[0])
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "broken.jpg" in line] == [
        f"agebench predict: {folder / 'b' / 'broken.jpg'}: truncated image: truncated JPEG (no end-of-image marker); "
        "not predicted"
    ]
    assert "5 of 6 images predicted" in captured.out


def test_predict_tta_flip_is_the_mean_of_the_image_and_its_mirror(loaded, folder, tmp_path):
    run = loaded["vit-tiny"]
    image = cv2.imread(str(folder / "a" / "1.png"))
    cv2.imwrite(str(tmp_path / "mirror.png"), image[:, ::-1])
    paths = [folder / "a" / "1.png", tmp_path / "mirror.png"]
    plain = [p.age for p in predict.predict_images(run, paths, progress=False)]
    flipped = [p.age for p in predict.predict_images(run, paths[:1], tta="flip", progress=False)]
    assert plain[0] != pytest.approx(plain[1], abs=1e-6)  # the mirror is a different input
    assert flipped[0] == pytest.approx((plain[0] + plain[1]) / 2, abs=1e-4)


def test_predict_detect_aligns_a_face_and_lists_images_without_one(runs, folder, tmp_path, capsys):
    rng = np.random.default_rng(1)  # a synthetic face that MTCNN finds
    image, _, landmarks = render_with_landmarks(sample_traits(rng), 40.0, 160, rng)
    cv2.imwrite(str(tmp_path / "face.png"), image)
    out = tmp_path / "preds.csv"
    argv = ["predict", "--run", str(runs["vit-tiny"]), str(tmp_path / "face.png"), str(folder / "a")]
    assert main([*argv, "--detect", "mtcnn", "--out", str(out), "--workers", "0"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    face = rows["face.png"]
    assert face["n_faces"] == "1" and face["error"] == "" and face["age"] != ""
    x, y, w, h = (float(v) for v in face["face_box"].split())
    assert (landmarks >= [x, y]).all() and (landmarks <= [x + w, y + h]).all()  # the box holds the five points
    for name in ("0.png", "1.png", "2.png"):  # noise: no face, so no age
        assert rows[name]["age"] == "" and rows[name]["n_faces"] == "0" and rows[name]["error"] == "no face found"
    assert "no face found in 3 image(s), not predicted" in capsys.readouterr().out


def test_predict_bad_arguments_are_one_line_errors(runs, folder, tmp_path, capsys):
    base = ["predict", "--run", str(runs["vit-tiny"])]
    for argv, message in [
        ([*base, str(tmp_path / "nope.jpg")], "nope.jpg: no such file or folder"),
        ([*base, str(folder), "--tta", "crops"], "--tta 'crops': expected one of none, flip"),
        ([*base, str(folder), "--detect", "dlib"], "--face-detector 'dlib': expected none, haar, mtcnn"),
        (["predict", "--run", str(tmp_path), str(folder)], "no config.yaml"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_eval_tta_default_leaves_config_hashes_unchanged():
    plain = to_dict(FitConfig())
    old = {k: v for k, v in plain.items() if k != "eval"}  # a config written before eval.tta existed
    assert config_hash(plain) == config_hash(old)
    assert config_hash({**plain, "eval": {"tta": "flip"}}) != config_hash(old)


@pytest.mark.slow
def test_fit_records_tta_and_the_trained_run_exports(tmp_path, capsys):
    from agebench.train import fit

    manifest = make_image_set(tmp_path / "data", n=24, size=40, subjects=12)
    run = tmp_path / "results" / "tiny" / "convnext-atto" / "seed0"
    cfg = {
        "out_dir": str(run),
        "data": {"manifest": str(manifest), "img_size": SIZE, "batch_size": 8, "num_workers": 0},
        "model": {"name": "convnext-atto"},
        "eval": {"tta": "flip"},
        "logger": {"kind": "none"},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "num_sanity_val_steps": 0},
    }
    fit(from_dict(FitConfig, cfg))
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["tta"] == "flip"
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 0
    assert "years on 4 test images: ok" in capsys.readouterr().out


def test_several_faces_pick_the_main_one_and_count_all():
    two = np.zeros((120, 200, 3), np.uint8)
    detector = faces.FaceDetector(faces.DetectorSpec("none"))
    found = [faces.FoundFace((5, 5, 30, 30)), faces.FoundFace((80, 40, 40, 40))]
    detector.find = lambda rgb: found  # type: ignore[method-assign]
    result = detector.crop_quad(two, margin=0.0)
    assert result.n_faces == 2 and result.face is found[1]
    assert result.quad == faces.box_quad(80, 40, 40, 40)
