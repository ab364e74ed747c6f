"""Leaderboards across labs: result bundles, `agebench verify`, and merged leaderboards over several sources.

Fake labs write result cells the way `agebench fit` does (metrics.json recomputable from predictions.csv); the
test split is a list of (path, age) pairs, so two labs share a split exactly when their lists match.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path

import pytest
from test_leaderboard import _metrics

from agebench.cli import main
from agebench.report import build_leaderboard

N_TEST = 200


def split(n: int = N_TEST, shift: int = 0) -> list[tuple[str, float]]:
    """A test split: image paths relative to the data root and ages; ``shift`` relabels every image."""
    return [(f"test/{i:04d}.jpg", float(1 + (i * 37) % 89 + shift)) for i in range(n)]


def write_lab_cell(
    root: Path, dataset: str, model: str, seed: int, pairs: list[tuple[str, float]], noise: float, **extra
) -> Path:
    """A cell of one lab: predictions on ``pairs`` (with a demographic column, as issue 22 adds), metrics from them."""
    folder = root / dataset / model / f"seed{seed}"
    folder.mkdir(parents=True)
    ages = [a for _, a in pairs]
    preds = [round(a + noise * math.sin(i * 1.3 + seed + len(model)), 6) for i, a in enumerate(ages)]
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "age", "pred", "subject_id", "gender"])
        for i, ((path, age), pred) in enumerate(zip(pairs, preds, strict=True)):
            w.writerow([path, f"{age:g}", f"{pred:.6f}", f"s{i // 2}", "fm"[i % 2]])
    metrics = {
        "schema_version": 1,
        "status": "ok",
        "dataset": dataset,
        "model": model,
        "seed": seed,
        **_metrics(ages, preds),
        "baseline_mae": 21.0,
        "params": 3_700_000,
        "latency_ms": 4.0,
        "throughput": 900.0,
        "gflops": 0.5,
        "leaky_splits": False,
        "subject_exclusive": True,
        "provenance": {"device": "cpu", "manifest_sha256": f"bytes-of-{root.name}"},
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(f"model:\n  name: {model}\nseed: {seed}\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    return folder


def lab(root: Path, pairs: list[tuple[str, float]], models: dict[str, float], seeds=(0, 1)) -> Path:
    for model, noise in models.items():
        for seed in seeds:
            write_lab_cell(root, "synth", model, seed, pairs, noise + 0.2 * seed)
    return root


def write_manifest(path: Path, test: list[tuple[str, float]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "age", "subject_id", "split"])
        w.writerows([f"train/{i}.jpg", "30", f"t{i}", "train"] for i in range(5))
        w.writerows([p, f"{a:g}", f"s{i // 2}", "test"] for i, (p, a) in enumerate(test))
    return path


def rows_of(doc: dict) -> list[dict]:
    return [r for r in doc["rows"] if r["status"] == "ok" and r["source"] == "measured"]


def test_two_labs_on_one_split_merge_and_a_third_on_another_is_listed_not_paired(tmp_path: Path) -> None:
    a = lab(tmp_path / "labA", split(), {"convnext-atto": 3.0, "vit-tiny": 4.0})
    b = lab(tmp_path / "labB", split(), {"convnext-atto": 2.0, "hybrid-atto": 2.5})
    # The same paths in another order and another manifest file: still the same split.
    rev = lab(tmp_path / "labR", split()[::-1], {"hybrid-atto": 2.6}, seeds=(0,))
    c = lab(tmp_path / "labC", split(n=150), {"convnext-atto": 1.0})
    out = tmp_path / "lb.json"
    build_leaderboard([a, b, rev, c], out=out, reference="none")
    doc = json.loads(out.read_text())
    rows = rows_of(doc)
    origins = {(r["model"], r["origin"]) for r in rows}
    # The same model and seed from two labs stay two rows, each labelled with its source.
    assert {("convnext-atto", "labA"), ("convnext-atto", "labB"), ("convnext-atto", "labC")} <= origins
    main_table = [r for r in rows if r["table"] is None]
    assert {r["origin"] for r in main_table} == {"labA", "labB", "labR"}
    assert sorted(r["rank"] for r in main_table) == list(range(1, len(main_table) + 1))
    pairs = doc["statistics"]["datasets"]["synth"]["pairs"]
    labels = {p["a"] for p in pairs} | {p["b"] for p in pairs}
    assert "convnext-atto (labA)" in labels and "convnext-atto (labB)" in labels
    assert not any("labC" in label for label in labels)
    assert not doc["statistics"]["datasets"]["synth"]["refused"]
    # labC: its own table, flagged, never paired with the others, and listed with the reason.
    (c_row,) = [r for r in rows if r["origin"] == "labC"]
    assert c_row["table"].startswith("synth [test split ") and "other test split" in c_row["flags"]
    assert c_row["mae_ci_low"] is not None and c_row["rank"] == 1
    assert {u["origin"] for u in doc["unpooled"]} == {"labC"} and len(doc["unpooled"]) == 2
    assert "150 images here, 200 there, 150 paths in common" in doc["unpooled"][0]["reason"]
    md = tmp_path / "lb.md"
    build_leaderboard([a, b, rev, c], out=md, reference="none")
    text = md.read_text()
    assert "## Not pooled: other test splits" in text and "labC:synth/convnext-atto/seed0" in text
    assert "measured (labB)" in text


def test_relabelled_ages_are_another_split(tmp_path: Path) -> None:
    a = lab(tmp_path / "labA", split(), {"convnext-atto": 3.0}, seeds=(0,))
    b = lab(tmp_path / "labB", split(shift=1), {"convnext-atto": 2.0}, seeds=(0,))
    doc = json.loads(build_leaderboard([a, b], out=tmp_path / "lb.json", reference="none").written[0].read_text())
    (u,) = doc["unpooled"]
    assert u["origin"] == "labB" and "200 paths in common, 200 of them with other ages" in u["reason"]


def test_a_merged_row_keeps_the_interval_of_its_own_folder(tmp_path: Path) -> None:
    a = lab(tmp_path / "labA", split(), {"convnext-atto": 3.0})
    b = lab(tmp_path / "labB", split(), {"convnext-atto": 2.0})
    alone = rows_of(json.loads(build_leaderboard(a, out=tmp_path / "a.json").written[0].read_text()))
    merged = rows_of(json.loads(build_leaderboard([a, b], out=tmp_path / "ab.json").written[0].read_text()))
    (mine,) = [r for r in merged if r["origin"] == "labA"]
    keys = ("mae_mean", "mae_std", "mae_ci_low", "mae_ci_high", "cs5_ci_low", "cs5_ci_high")
    assert {k: mine[k] for k in keys} == {k: alone[0][k] for k in keys}


def _bundle(tmp_path: Path, folder: Path, name: str = "labA.zip") -> Path:
    out = tmp_path / name
    cells = [str(p) for p in sorted(folder.glob("*/*/seed*"))]
    assert main(["bundle", *cells, "--out", str(out)]) == 0
    return out


def _edit(bundle: Path, member: str, edit) -> Path:
    """A copy of ``bundle`` with ``member``'s text passed through ``edit`` (the index left as it was)."""
    edited = bundle.with_name("edited-" + bundle.name)
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, edit(data.decode()).encode() if info.filename == member else data)
    return edited


def test_a_bundle_holds_the_row_files_only_and_an_untouched_one_verifies(tmp_path: Path, capsys) -> None:
    a = lab(tmp_path / "labA", split(), {"convnext-atto": 3.0})
    bundle = _bundle(tmp_path, a)
    names = zipfile.ZipFile(bundle).namelist()
    assert "bundle.json" in names and "synth/convnext-atto/seed0/predictions.csv" in names
    assert not any("ckpt" in n or "checkpoints" in n for n in names)
    again = _bundle(tmp_path, a, "again.zip")
    assert again.read_bytes() == bundle.read_bytes()  # deterministic
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "verified" in out
    assert "claimed, not recomputable from files: latency_ms 4, throughput 900, gflops 0.5" in out
    manifest = write_manifest(tmp_path / "manifest.csv", split())
    assert main(["verify", str(bundle), "--manifest", str(manifest)]) == 0
    assert "covered exactly" in capsys.readouterr().out


def test_one_edited_prediction_fails_verify_naming_file_and_row(tmp_path: Path, capsys) -> None:
    bundle = _bundle(tmp_path, lab(tmp_path / "labA", split(), {"convnext-atto": 3.0}))
    member = "synth/convnext-atto/seed1/predictions.csv"

    def edit(text: str) -> str:
        lines = text.split("\n")
        fields = lines[17].split(",")  # file row 18: the 17th image
        fields[2] = f"{float(fields[2]) + 9:.6f}"
        lines[17] = ",".join(fields)
        return "\n".join(lines)

    edited = _edit(bundle, member, edit)
    capsys.readouterr()
    assert main(["verify", str(edited)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MISMATCH")]
    assert (
        f"MISMATCH {edited.name}: {member}:18: row differs from its digest in bundle.json (changed after bundling)"
        in lines
    )
    assert any(ln.startswith("MISMATCH synth/convnext-atto/seed1/metrics.json: mae is ") for ln in lines), lines
    assert not any("seed0" in ln for ln in lines)
    # The leaderboard reading the edited bundle flags the row as unverified.
    doc = json.loads(build_leaderboard(edited, out=tmp_path / "e.json").written[0].read_text())
    flagged = {tuple(r["seeds"]): r["flags"] for r in rows_of(doc)}
    assert "unverified" in flagged[(1,)] and "unverified" not in flagged[(0,)]


def test_a_bundle_missing_50_test_images_fails_verify_manifest(tmp_path: Path, capsys) -> None:
    full = split()
    bundle = _bundle(tmp_path, lab(tmp_path / "labA", full[50:], {"convnext-atto": 3.0}, seeds=(0,)))
    manifest = write_manifest(tmp_path / "manifest.csv", full)
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 0  # consistent in itself
    assert main(["verify", str(bundle), "--manifest", str(manifest)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MISMATCH")]
    assert lines == [
        "MISMATCH synth/convnext-atto/seed0/predictions.csv: lacks 50 of the 200 test images of manifest.csv "
        "(first: test/0000.jpg, test/0001.jpg, test/0002.jpg, test/0003.jpg, test/0004.jpg)"
    ]


def test_a_relabelled_image_fails_verify_manifest_with_its_row(tmp_path: Path, capsys) -> None:
    pairs = split()
    bundle = _bundle(tmp_path, lab(tmp_path / "labA", pairs, {"convnext-atto": 3.0}, seeds=(0,)))
    mine = list(pairs)
    mine[7] = (mine[7][0], mine[7][1] + 2)
    manifest = write_manifest(tmp_path / "manifest.csv", mine)
    capsys.readouterr()
    assert main(["verify", str(bundle), "--manifest", str(manifest)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MISMATCH")]
    assert lines == [
        f"MISMATCH synth/convnext-atto/seed0/predictions.csv:9: test/0007.jpg has age {pairs[7][1]:g} but "
        f"manifest.csv row 14 says {mine[7][1]:g}"
    ]


def test_bundle_verify_leaderboard_equals_the_folder(tmp_path: Path, capsys) -> None:
    a = lab(tmp_path / "labA", split(), {"convnext-atto": 3.0, "vit-tiny": 3.5})
    bundle = _bundle(tmp_path, a)
    assert main(["verify", str(bundle)]) == 0
    keys = ("model", "seeds", "mae_mean", "mae_std", "mae_ci_low", "mae_ci_high", "rank", "group", "flags")
    folder = rows_of(json.loads(build_leaderboard(a, out=tmp_path / "f.json").written[0].read_text()))
    packed = rows_of(json.loads(build_leaderboard(bundle, out=tmp_path / "b.json").written[0].read_text()))
    assert [{k: r[k] for k in keys} for r in packed] == [{k: r[k] for k in keys} for r in folder]
    assert all(r["mae_ci_low"] < r["mae_mean"] < r["mae_ci_high"] for r in packed)


@pytest.mark.parametrize(
    "args,says",
    [
        (["verify", "{W}/nope.zip"], "nope.zip: no such bundle or folder"),
        (["verify", "{W}/not.zip"], "not a readable bundle zip"),
        (["verify", "{W}/labA", "--manifest", "{W}/none.csv"], "--manifest {W}/none.csv: no such file"),
        (["bundle", "{W}/nothing", "--out", "{W}/b.zip"], "nothing: no such folder"),
        (["bundle", "{W}/labA", "--out", "{W}/b.tar"], "a bundle is a .zip file"),
        (["leaderboard", "{W}/labA", "{W}/nope.zip"], "nope.zip: no such results folder or bundle"),
        (["leaderboard", "{W}/labA", "{W}/labA", "--format", "all"], "--format all needs --out"),
    ],
)
def test_bad_bundle_arguments_are_one_line(tmp_path: Path, capsys, args, says) -> None:
    lab(tmp_path / "labA", split(20), {"convnext-atto": 3.0}, seeds=(0,))
    (tmp_path / "not.zip").write_text("plain text")
    argv = [a.replace("{W}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says.replace("{W}", str(tmp_path)) in err[0], err
    assert not (tmp_path / "b.zip").exists()
