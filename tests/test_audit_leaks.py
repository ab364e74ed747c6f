"""`agebench audit` finds subject leaks and identical images across splits, and prints age histograms."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import make_image_set
from test_sources import cli_main  # noqa: F401

from agebench.data.audit import DECADES, audit, decade
from agebench.data.manifest import load_manifest, write_manifest


def _rows(manifest: Path) -> list[dict[str, object]]:
    return [
        {"path": r.path, "age": r.age, "subject_id": r.subject_id, "split": r.split}
        for r in load_manifest(manifest).records
    ]


def test_clean_manifest_is_valid(image_set: Path, cli_main, capsys) -> None:  # noqa: F811
    report = audit(image_set)
    assert not report.leaky and report.duplicates == [] and report.duplicates_checked
    assert cli_main(["audit", str(image_set)]) == 0
    assert "valid" in capsys.readouterr().out


def test_planted_subject_leak_and_duplicate_image_exit_1_and_are_listed(tmp_path: Path, cli_main, capsys) -> None:  # noqa: F811
    manifest = make_image_set(tmp_path)
    rows = _rows(manifest)
    rows[0]["split"] = "test"  # s0 now in train and test
    source = next(r for r in rows if r["split"] == "val")
    shutil.copy(tmp_path / str(source["path"]), tmp_path / "copy_of_val.jpg")  # same bytes, other path, train
    rows.append({"path": "copy_of_val.jpg", "age": 40, "subject_id": "other", "split": "train"})
    write_manifest(rows, manifest)
    report = audit(manifest)
    assert report.leaking_subjects == {"s0": ["train", "test"]}
    [dup] = report.leaking_duplicates
    assert dup.paths == sorted(["copy_of_val.jpg", str(source["path"])]) and dup.splits == ["train", "val"]
    assert report.exit_code == 1
    assert cli_main(["audit", str(manifest)]) == 1
    out = capsys.readouterr().out
    assert "s0 (train/test)" in out and "copy_of_val.jpg" in out and str(source["path"]) in out


def test_duplicate_within_one_split_alone_is_not_a_leak(tmp_path: Path) -> None:
    manifest = make_image_set(tmp_path)
    rows = _rows(manifest)
    source = next(r for r in rows if r["split"] == "train")
    shutil.copy(tmp_path / str(source["path"]), tmp_path / "again.jpg")
    rows.append({"path": "again.jpg", "age": 30, "subject_id": source["subject_id"], "split": "train"})
    write_manifest(rows, manifest)
    report = audit(manifest)
    assert len(report.duplicates) == 1 and not report.leaky and report.exit_code == 0


def test_age_histograms_count_every_image_by_decade(image_set: Path, capsys) -> None:
    from agebench.data.audit import print_report

    report = audit(image_set)
    manifest = load_manifest(image_set)
    for split, counts in report.histograms.items():
        assert list(counts) == list(DECADES)
        assert sum(counts.values()) == len(manifest.split(split))
    assert decade(9.9) == "0-9" and decade(10) == "10-19" and decade(117) == "100+"
    print_report(report)
    out = capsys.readouterr().out
    assert "images per age decade" in out and "60-69" in out


def test_malformed_manifest_still_exits_2(tmp_path: Path, cli_main, capsys) -> None:  # noqa: F811
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,age,subject_id,split\na.jpg,old,s,train\n")
    assert cli_main(["audit", str(bad), "--root", str(tmp_path)]) == 2
    assert "age 'old' is not a number" in capsys.readouterr().err


def test_prepare_records_leaky_for_the_leaderboard(tmp_path: Path) -> None:
    """A protocol that puts the same picture in two splits is prepared, and labelled leaky."""
    import json

    from test_sources import make_cacd

    from agebench.data.prepare import prepare

    raw = make_cacd(tmp_path / "raw")
    shutil.copy(raw / "CACD2000/16_Mary_Kate_Olsen_0001.jpg", raw / "CACD2000/60_Jet_Li_0009.jpg")
    result = prepare("cacd", raw, tmp_path / "out", protocol="random", face_detector="none", progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["leaky"] is True and report["audit"]["subject_leaks"] > 0
    # our own protocols keep identical pictures together, even across subjects
    splits = {r.path: r.split for r in load_manifest(result.manifest, raw).records}
    assert splits["CACD2000/16_Mary_Kate_Olsen_0001.jpg"] == splits["CACD2000/60_Jet_Li_0009.jpg"]
    assert report["audit"]["duplicate_image_leaks"] == 0
