"""The importers added for issue 13: AgeDB, FG-NET, APPA-REAL / CLAP2016, IMDB-Clean on fake trees of their real layout.

Each fake tree plants the real archive's quirks (name case, a/b photos, ``_face.jpg`` crops, ``valid`` split,
extra CSV columns, train/valid identity overlap) and the tests check ages, subjects, splits and determinism.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
from test_sources import cli_main, write_files, write_jpeg  # noqa: F401

from agebench.data.cache import open_cache
from agebench.data.faces import read_crops
from agebench.data.manifest import load_manifest
from agebench.data.prepare import prepare, prepare_folds
from agebench.data.sources import scan
from agebench.errors import UserError

AGEDB_PEOPLE = ("MariaCallas", "JeanPaul_Belmondo", "AudreyHepburn", "MarlonBrando", "GraceKelly", "Pele")


def make_agedb(root: Path, reverse: bool = False) -> Path:
    names = [
        f"AgeDB/{100 * p + k}_{person}_{10 + 9 * p + 5 * k}_{'fm'[p % 2]}.jpg"
        for p, person in enumerate(AGEDB_PEOPLE)
        for k in range(3)
    ]
    names += ["AgeDB/999_Nobody_40_x.jpg", "AgeDB/notes.jpg"]  # odd gender: kept; no layout: skipped
    return write_files(root, names, reverse)


def fgnet_names() -> list[str]:
    names = [
        f"FGNET/images/{s:03d}{'Aa'[s % 2]}{a:02d}.{'JPG' if s % 3 else 'jpg'}" for s in range(1, 11) for a in (2, 9)
    ]
    names += ["FGNET/images/002A15a.JPG", "FGNET/images/002A15b.JPG"]  # two photos at one age: both kept
    names += ["FGNET/images/003A09.JPG"]  # 003a09.jpg again, in another case: one of them is skipped
    return names


def make_fgnet(root: Path, reverse: bool = False) -> Path:
    """Bytes seeded by a hash of the name: FG-NET names are so alike that write_files' byte sum collides."""
    (root / "FGNET" / "points").mkdir(parents=True, exist_ok=True)
    (root / "FGNET" / "points" / "001a02.pts").write_text("version: 1\n")
    for name in reversed(fgnet_names()) if reverse else fgnet_names():
        write_jpeg(root / name, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


APPA_ROWS = {"train": range(0, 6), "valid": range(6, 9), "test": range(9, 12)}


def make_appa_real(root: Path) -> Path:
    base = root / "appa-real-release"
    for split, numbers in APPA_ROWS.items():
        rows = []
        for i in numbers:
            name = f"{i:06d}.jpg"
            write_jpeg(base / split / name, i, (24, 24))  # the original picture: not what we read
            if i != 4:  # 000004's face crop is missing: the row is skipped
                write_jpeg(base / split / f"{name}_face.jpg", 100 + i)
            rows.append([name, 30 + i, f"{20 + i}.5", "3.25", 22 + i])
        header = ["file_name", "num_ratings", "apparent_age_avg", "apparent_age_std", "real_age"]
        _write_csv(base / f"gt_avg_{split}.csv", header, rows)
    _write_csv(base / "gt_train.csv", ["file_name", "real_age", "apparent_age"], [["000000.jpg", 22, 21]])
    categories = [["000006.jpg", "female", "asian", "no", "n", "n"], ["000007.jpg", "male", "afroamerican", "", "", ""]]
    _write_csv(base / "allcategories_valid.csv", ["file", "gender", "race", "makeup", "time", "happiness"], categories)
    return root


def make_clap2016(root: Path) -> Path:
    for split, numbers in APPA_ROWS.items():
        for i in numbers:
            write_jpeg(root / split / f"{i:06d}.jpg", i)
        _write_csv(
            root / f"{split}_gt.csv", ["image", "mean", "stdv"], [[f"{i:06d}.jpg", 20 + i, 2.5] for i in numbers]
        )
    return root


IMDB_HEADER = ["filename", "age", "gender", "x_min", "y_min", "x_max", "y_max", "head_roll", "head_yaw", "head_pitch"]


def make_imdb_clean(root: Path) -> Path:
    def row(folder: int, person: int, k: int, age: int, box: tuple = (4, 6, 14, 20)) -> list[object]:
        name = f"{folder:02d}/nm{person:07d}_rm{1000 + k}_1970-1-1_{1970 + age}.jpg"
        write_jpeg(root / "data" / "imdb" / name, person * 10 + k, (32, 32))
        return [name, age, "M", *box, 0.1, -2.0, 3.5]

    train = [row(1, p, k, 20 + 3 * p + k) for p in range(1, 5) for k in range(2)]
    train.append(row(2, 9, 0, 33, ("", "", "", "")))  # no usable box: whole image, listed as malformed
    valid = [row(3, 5, 0, 41), row(3, 1, 5, 22)]  # person 1 is in train too (as in the real split)
    test = [row(4, p, 0, 50 + p) for p in (6, 7)]
    test.append(test[0])  # the same picture listed twice: the second is skipped
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        _write_csv(root / "csvs" / f"imdb_{split}_new.csv", IMDB_HEADER, rows)
    return root


def _prepare(dataset: str, raw: Path, out: Path, **kw):
    kw.setdefault("face_detector", "none")
    return prepare(dataset, raw, out, workers=1, progress=False, **kw)


def _rows(result) -> list:
    return load_manifest(result.manifest, check_files=False, required_splits=()).records


# -- AgeDB ------------------------------------------------------------------------------------------------------


def test_agedb_subject_is_the_name_field_and_splits_never_leak(tmp_path: Path) -> None:
    raw = make_agedb(tmp_path / "raw")
    found = scan("agedb", raw)
    rec = {r.path: r for r in found.records}["AgeDB/101_JeanPaul_Belmondo_24_m.jpg"]
    assert rec.age == 24 and rec.subject_id == "JeanPaul_Belmondo" and rec.extra == {"gender": "M", "agedb_id": "101"}
    assert {r.subject_id for r in found.records} == {*AGEDB_PEOPLE, "Nobody"}
    assert [m["path"] for m in found.malformed] == ["AgeDB/999_Nobody_40_x.jpg"]
    assert [s["path"] for s in found.skipped] == ["AgeDB/notes.jpg"]
    result = _prepare("agedb", raw, tmp_path / "out")
    assert result.report["subject_exclusive"] is True and result.report["leaky"] is False
    again = _prepare("agedb", make_agedb(tmp_path / "raw2", reverse=True), tmp_path / "out2")
    assert again.manifest.read_bytes() == result.manifest.read_bytes()


# -- FG-NET -----------------------------------------------------------------------------------------------------


def test_fgnet_reads_either_case_keeps_a_b_photos_and_skips_a_case_duplicate(tmp_path: Path) -> None:
    found = scan("fgnet", make_fgnet(tmp_path))
    by_path = {r.path: r for r in found.records}
    assert len(found.records) == 22 and {r.subject_id for r in found.records} == {f"{s:03d}" for s in range(1, 11)}
    assert by_path["FGNET/images/001a02.JPG"].age == 2 and by_path["FGNET/images/003A09.JPG"].subject_id == "003"
    assert by_path["FGNET/images/002A15a.JPG"].age == by_path["FGNET/images/002A15b.JPG"].age == 15
    assert [s["path"] for s in found.skipped] == ["FGNET/images/003a09.jpg"]  # path order: 003A09.JPG first
    assert "differ by case" in found.skipped[0]["reason"]
    assert found.notes["same_age_photos"] == 1
    assert found.notes["same_age_photo_groups"] == [["FGNET/images/002A15a.JPG", "FGNET/images/002A15b.JPG"]]


@pytest.mark.parametrize("fold", [0, 7])
def test_fgnet_lopo_fold_tests_exactly_one_subject(fold: int, tmp_path: Path) -> None:
    raw = make_fgnet(tmp_path / "raw")
    result = _prepare("fgnet", raw, tmp_path / "out", protocol="lopo", fold=fold, seed=3)
    rows = _rows(result)
    subject = f"{fold + 1:03d}"
    assert {r.subject_id for r in rows if r.split == "test"} == {subject}
    assert len([r for r in rows if r.split == "test"]) == (4 if subject == "002" else 2)
    assert len(rows) == 22 and load_manifest(result.manifest, raw).leaks() == {}
    val = {r.subject_id for r in rows if r.split == "val"}
    assert 1 <= len(val) <= 3 and subject not in val  # a fifth of the other nine subjects
    info = result.report["protocol_info"]
    assert result.report["n_folds"] == 10 and info["test_subject"] == subject and result.report["seed"] == 3
    assert result.report["source_notes"]["same_age_photos"] == 1 and result.report["subject_exclusive"] is True
    again = _prepare(
        "fgnet", make_fgnet(tmp_path / "raw2", reverse=True), tmp_path / "o2", protocol="lopo", fold=fold, seed=3
    )
    assert again.report["manifest_sha256"] == result.report["manifest_sha256"]


def test_fgnet_lopo_fold_all_writes_one_folder_per_subject_sharing_one_cache(tmp_path: Path, cli_main) -> None:  # noqa: F811
    raw = make_fgnet(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["prepare", "fgnet", "--root", str(raw), "--out", str(out), "--protocol", "lopo", "--fold", "all"]
    assert cli_main([*argv, "--face-detector", "none", "--cache-size", "8", "--workers", "1"]) == 0
    index = json.loads((out / "folds.json").read_text())
    assert index["dataset"] == "fgnet" and index["protocol"] == "lopo" and index["n_folds"] == 10
    assert [f["dir"] for f in index["folds"]] == [f"fold{k:02d}" for k in range(10)]
    tested = []
    for k, entry in enumerate(index["folds"]):
        report = json.loads((out / entry["dir"] / "report.json").read_text())
        rows = load_manifest(out / entry["manifest"], raw).records
        tested.append({r.subject_id for r in rows if r.split == "test"})
        assert tested[-1] == {entry["test_subjects"]} == {f"{k + 1:03d}"} and report["fold"] == k
        assert report["leaky"] is False and entry["leaky"] is False
        assert open_cache(out / entry["manifest"]) is not None  # every fold's cache is valid for its manifest
    assert os.path.samefile(out / "fold00" / "manifest.cache.npy", out / "fold09" / "manifest.cache.npy")
    with pytest.raises(UserError, match="--fold all: protocol 'official' is one fixed split"):
        prepare_folds("appa-real", make_appa_real(tmp_path / "appa"), tmp_path / "o", workers=1, progress=False)


def test_lopo_needs_identities_and_a_fold_per_subject(tmp_path: Path) -> None:
    raw = make_fgnet(tmp_path / "raw")
    with pytest.raises(UserError, match="--fold 10: expected 0..9"):
        _prepare("fgnet", raw, tmp_path / "o", protocol="lopo", fold=10)
    with pytest.raises(UserError, match="appa-real has no identities to leave out"):
        _prepare("appa-real", make_appa_real(tmp_path / "appa"), tmp_path / "o", protocol="lopo")


# -- APPA-REAL and CLAP2016 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "age_of_000007"), [(None, 27.5), ("apparent", 27.5), ("real", 29.0)])
def test_appa_real_official_split_reads_the_face_crops_and_the_chosen_target(
    target: str | None, age_of_000007: float, tmp_path: Path
) -> None:
    raw = make_appa_real(tmp_path / "raw")
    result = _prepare("appa-real", raw, tmp_path / "out", face_detector=None, target=target)
    rows = {r.path: r for r in _rows(result)}
    crop = "appa-real-release/valid/000007.jpg_face.jpg"
    assert rows[crop].split == "val" and rows[crop].age == age_of_000007
    assert rows[crop].extra["apparent_age"] == "27.5" and rows[crop].extra["real_age"] == "29"
    assert rows[crop].extra["target"] == (target or "apparent")
    # allcategories_valid.csv: one gender vocabulary (M/F), race as the archive labels it; absent files -> empty
    assert (rows[crop].extra["gender"], rows[crop].extra["race"]) == ("M", "afroamerican")
    assert rows["appa-real-release/valid/000006.jpg_face.jpg"].extra["gender"] == "F"
    assert rows["appa-real-release/valid/000008.jpg_face.jpg"].extra["gender"] == ""
    assert rows["appa-real-release/train/000000.jpg_face.jpg"].extra["race"] == ""
    assert len(rows) == 11 and all(p.endswith(".jpg_face.jpg") for p in rows)
    assert {s: sum(r.split == s for r in rows.values()) for s in ("train", "val", "test")} == {
        "train": 5,
        "val": 3,
        "test": 3,
    }
    assert result.report["protocol"] == "official" and result.report["seed"] is None and result.report["fold"] is None
    assert result.report["subject_exclusive"] is False and result.report["faces"]["detector"] == "none"
    assert [s["path"] for s in result.report["skipped_files"]] == ["train/000004.jpg"]


def test_clap2016_is_the_same_family_without_real_age_or_face_crops(tmp_path: Path) -> None:
    raw = make_clap2016(tmp_path / "raw")
    found = scan("clap2016", raw)
    rec = {r.path: r for r in found.records}["valid/000007.jpg"]
    assert rec.age == 27 and rec.official_split == "val" and rec.extra["apparent_age_std"] == "2.5"
    assert len(found.records) == 12 and found.default_detector == "haar"
    with pytest.raises(UserError, match="--target real: expected one of apparent for clap2016"):
        scan("clap2016", raw, target="real")
    with pytest.raises(UserError, match="--target real: cacd has one age label only"):
        scan("cacd", raw, target="real")


# -- IMDB-Clean -------------------------------------------------------------------------------------------------


def test_imdb_clean_boxes_become_crops_and_the_train_valid_overlap_is_reported(tmp_path: Path) -> None:
    raw = make_imdb_clean(tmp_path / "raw")
    result = _prepare("imdb-clean", raw, tmp_path / "out", face_detector=None)
    rows = {r.path: r for r in _rows(result)}
    first = "data/imdb/01/nm0000001_rm1000_1970-1-1_1993.jpg"
    assert rows[first].age == 23 and rows[first].subject_id == "nm0000001" and rows[first].split == "train"
    assert rows[first].extra["gender"] == "M" and len(rows) == 13
    assert {r.split for r in rows.values() if r.subject_id in ("nm0000006", "nm0000007")} == {"test"}
    crops = read_crops(result.manifest.with_name("manifest.crops.csv"))
    assert crops[first] == ("bbox", (2.0, 6.0, 16.0, 6.0, 16.0, 20.0, 2.0, 20.0))  # 10x14 box -> 14 px square
    assert crops["data/imdb/02/nm0000009_rm1000_1970-1-1_2003.jpg"][0] == "given"
    assert [m["reason"] for m in result.report["malformed_names"]] == [
        "no usable face box; whole image (centre square)"
    ]
    assert "already listed in imdb_test_new.csv:2" in result.report["skipped_files"][0]["reason"]
    assert result.report["leaky"] is True and set(result.audit.leaking_subjects) == {"nm0000001"}
    assert result.audit.leaking_subjects["nm0000001"] == ["train", "val"]
    ours = _prepare("imdb-clean", raw, tmp_path / "ours", protocol="subject-exclusive")
    assert ours.report["leaky"] is False and ours.report["faces"]["counts"] == {"bbox": 12, "given": 1}


# -- CVPR24 database JSONs of the new sets ----------------------------------------------------------------------


def test_cvpr24_json_covers_agedb_folders_and_fgnet_per_person_folders(tmp_path: Path) -> None:
    agedb = make_agedb(tmp_path / "agedb")
    entries = [
        {"img_path": f"AgeDB/{r.path}", "age": r.age, "folder": i % 10}
        for i, r in enumerate(scan("agedb", agedb).records)
    ]
    (tmp_path / "AgeDB_aligned.json").write_text(json.dumps(entries))
    result = _prepare("agedb", agedb, tmp_path / "o1", protocol=f"cvpr24:{tmp_path / 'AgeDB_aligned.json'}", fold=1)
    assert result.report["protocol_info"]["split"] == {"train": [2, 3, 4, 5, 6, 7], "val": [8, 9], "test": [0, 1]}
    fgnet = make_fgnet(tmp_path / "fgnet")
    records = scan("fgnet", fgnet).records
    entries = [
        {"img_path": f"FG-NET/images/{Path(r.path).name}", "age": r.age, "folder": int(r.subject_id)} for r in records
    ]
    (tmp_path / "FG-Net_aligned.json").write_text(json.dumps(entries))
    spec = f"cvpr24:{tmp_path / 'FG-Net_aligned.json'}"
    result = _prepare("fgnet", fgnet, tmp_path / "o2", protocol=spec)
    assert result.report["protocol_info"]["split"] == {"train": [], "val": [], "test": list(range(1, 11))}
    assert {r.split for r in _rows(result)} == {"test"} and len(_rows(result)) == 22
    with pytest.raises(UserError, match="--fold 1: expected 0..0"):
        _prepare("fgnet", fgnet, tmp_path / "o3", protocol=spec, fold=1)


# -- wrong layouts and cards ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("agedb", "no files matching <id>_<Name>_<age>_<m|f>.jpg under"),
        ("fgnet", "no files matching <subject 3 digits>A<age 2 digits>[a|b].JPG under"),
        ("appa-real", "gt_avg_train.csv not found under"),
        ("clap2016", "train_gt.csv not found under"),
        ("imdb-clean", "imdb_train_new.csv not found under"),
    ],
)
def test_wrong_layout_is_one_line_naming_the_expected_layout(
    dataset: str,
    expected: str,
    tmp_path: Path,
    cli_main,  # noqa: F811
    capsys,
) -> None:
    raw = write_files(tmp_path / "raw", ["holiday/IMG_0001.jpg"])
    code = cli_main(["prepare", dataset, "--root", str(raw), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_csv_without_its_columns_is_one_line_naming_them(tmp_path: Path) -> None:
    raw = make_imdb_clean(tmp_path / "raw")
    _write_csv(raw / "csvs" / "imdb_valid_new.csv", ["filename", "age"], [["x.jpg", 3]])
    with pytest.raises(UserError, match=r"imdb_valid_new.csv: missing column\(s\) x_min, y_min, x_max, y_max"):
        scan("imdb-clean", raw)


@pytest.mark.parametrize("dataset", ["agedb", "fgnet", "appa-real", "clap2016", "imdb-clean"])
def test_protocol_card_matches_the_importer(dataset: str) -> None:
    import yaml

    from agebench.data.sources import default_protocol, get_source

    card = yaml.safe_load((Path(__file__).parents[1] / "data_manifests" / f"{dataset}.yaml").read_text())
    assert card["name"] == dataset and card["source"]["url"].startswith("http")
    assert card["licence"] and len(card["expected"]["age_range"]) == 2
    assert card["default_protocol"]["protocol"] == default_protocol(dataset)
    assert card["default_protocol"]["face_detector"] == get_source(dataset).DEFAULT_DETECTOR
    assert f"agebench prepare {dataset} " in card["verify"]["command"] and "sha256" in card["verify"]
