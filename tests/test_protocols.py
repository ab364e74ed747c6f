"""Split protocols: seeded subject-exclusive folds, CVPR24 JSON folders, coral-cnn CSVs (leaks reported)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_sources import CACD_PEOPLE, cacd_names, cli_main, make_afad, make_cacd, make_morph, make_utkface  # noqa: F401

from agebench.data.cache import open_cache
from agebench.data.faces import crop, read_crops
from agebench.data.images import read_rgb
from agebench.data.manifest import load_manifest
from agebench.data.prepare import prepare
from agebench.data.protocols import CVPR24_SPLITS, assign_folds
from agebench.errors import UserError


def _prepare(raw: Path, out: Path, dataset: str = "cacd", **kw):
    kw.setdefault("face_detector", "none")
    return prepare(dataset, raw, out, workers=1, progress=False, **kw)


def _splits(result) -> dict[str, str]:
    return {r.path: r.split for r in load_manifest(result.manifest, check_files=False).records}


@pytest.mark.parametrize("maker,dataset", [(make_cacd, "cacd"), (make_morph, "morph2")])
def test_subject_exclusive_folds_never_leak_and_rotate_every_subject_through_test(
    maker, dataset: str, tmp_path: Path
) -> None:
    raw = maker(tmp_path / "raw")
    tested: list[set[str]] = []
    for fold in range(5):
        result = _prepare(raw, tmp_path / f"out{fold}", dataset, fold=fold)
        manifest = load_manifest(result.manifest, raw)
        assert manifest.leaks() == {}
        assert result.report["subject_exclusive"] is True and result.report["leaky"] is False
        assert {r.split for r in manifest.records} == {"train", "val", "test"}
        tested.append({r.subject_id for r in manifest.split("test")})
    subjects = {r.subject_id for r in manifest.records}
    assert set().union(*tested) == subjects  # each subject is tested in some fold...
    assert sum(len(t) for t in tested) == len(subjects)  # ...and in exactly one


def test_folds_are_age_stratified_and_balanced() -> None:
    rng = np.random.default_rng(1)
    units = {f"s{i}": [float(a)] for i, a in enumerate(rng.integers(0, 100, 500))}
    folds = assign_folds(units, seed=3)
    sizes = np.bincount(list(folds.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1
    overall = np.mean([a[0] for a in units.values()])
    for k in range(5):
        ages = [units[u][0] for u, f in folds.items() if f == k]
        assert abs(np.mean(ages) - overall) < 1.5


def test_manifest_hash_depends_only_on_raw_tree_and_seed(tmp_path: Path) -> None:
    a = _prepare(make_utkface(tmp_path / "a"), tmp_path / "out_a", "utkface", seed=7)
    b = _prepare(make_utkface(tmp_path / "b", reverse=True), tmp_path / "out_b", "utkface", seed=7)
    c = _prepare(tmp_path / "a", tmp_path / "out_c", "utkface", seed=8)
    assert a.report["manifest_sha256"] == b.report["manifest_sha256"]
    assert a.manifest.read_bytes() == b.manifest.read_bytes()
    assert _splits(a) != _splits(c)


def test_identity_less_sets_are_flagged_not_subject_exclusive(tmp_path: Path) -> None:
    utk = _prepare(make_utkface(tmp_path / "utk"), tmp_path / "o1", "utkface")
    afad = _prepare(make_afad(tmp_path / "afad"), tmp_path / "o2", "afad")
    for result in (utk, afad):
        assert result.report["subject_exclusive"] is False and result.report["leaky"] is False
        report = json.loads((result.manifest.parent / "report.json").read_text())
        assert report["subject_exclusive"] is False
        assert "not subject-exclusive" in (result.manifest.parent / "report.md").read_text()
    assert afad.report["grouped_by"].startswith("file-name group")
    rows = load_manifest(afad.manifest, tmp_path / "afad").records
    split_of_id: dict[str, set[str]] = {}
    for r in rows:
        split_of_id.setdefault(r.extra["afad_id"] or r.path, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of_id.values())  # each <id> group in one split


def test_random_protocol_leaks_subjects_and_says_so(tmp_path: Path) -> None:
    result = _prepare(make_cacd(tmp_path / "raw"), tmp_path / "out", protocol="random")
    assert result.report["leaky"] is True and result.report["subject_exclusive"] is False
    assert result.audit.leaking_subjects


def test_fold_out_of_range_is_a_user_error(tmp_path: Path, cli_main, capsys) -> None:  # noqa: F811
    raw = make_cacd(tmp_path / "raw")
    code = cli_main(["prepare", "cacd", "--root", str(raw), "--out", str(tmp_path / "o"), "--fold", "5"])
    assert code == 2 and "--fold 5: expected 0..4" in capsys.readouterr().err


# -- CVPR24 unified benchmark JSON ------------------------------------------------------------------------------


def _cvpr24_json(path: Path, raw: Path) -> Path:
    entries = []
    for i, name in enumerate(cacd_names()):
        person = next(p for p in CACD_PEOPLE if f"_{p}_" in name)
        folder = CACD_PEOPLE.index(person)  # one subject per folder 0-9
        x0, y0 = (-6, -4) if i == 0 else (4, 5)  # entry 0: a box reaching outside the image
        entries.append(
            {
                "img_path": f"CACD/{name}",
                "id_num": folder,
                "age": int(Path(name).name.split("_")[0]),
                "database": "CACD2000",
                "folder": folder,
                "aligned_bbox": [x0, y0, x0 + 20, y0, x0 + 20, y0 + 20, x0, y0 + 20],
                "alignment_source": "test",
            }
        )
    entries.append({"img_path": "CACD/CACD2000/99_Nobody_0001.jpg", "age": 30, "folder": 1, "id_num": 99})
    entries.append({"img_path": f"CACD/{cacd_names()[1]}", "age": -1, "folder": 1, "id_num": 0})
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize("fold", range(5))
def test_cvpr24_json_folders_follow_the_published_split_table(fold: int, tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw", size=(40, 40))
    spec = _cvpr24_json(tmp_path / "CACD2000_aligned.json", raw)
    result = _prepare(raw, tmp_path / "out", protocol=f"cvpr24:{spec}", fold=fold, cache_size=16)
    manifest = load_manifest(result.manifest, raw)
    train, val, test = CVPR24_SPLITS[fold]
    expected = {
        p: s
        for s, fs in zip(("train", "val", "test"), (train, val, test), strict=True)
        for f in fs
        for p in [CACD_PEOPLE[f]]
    }
    assert {r.subject_id: r.split for r in manifest.records} == expected
    assert len(manifest.records) == 40 and manifest.leaks() == {}
    assert result.report["protocol_info"]["unmatched_entries"] == 1
    assert result.report["protocol_info"]["unknown_age_entries"] == 1
    assert result.report["seed"] is None and result.report["faces"]["counts"] == {"bbox": 40}
    # the cache holds the warped protocol box, including the one reaching outside the image
    crops = read_crops(result.manifest.with_name("manifest.crops.csv"))
    reader = open_cache(result.manifest)
    first = cacd_names()[0]
    assert crops[first][1] == (-6, -4, 14, -4, 14, 16, -6, 16)
    image = read_rgb(raw / first)
    assert np.array_equal(reader.get(first), crop(image, crops[first][1], 16))
    big = crop(image, crops[first][1], 20)  # at native scale: the inside part is the image itself
    assert np.array_equal(big[4:, 6:], image[:16, :14])
    assert np.array_equal(big[:4, 6:], np.repeat(image[:1, :14], 4, axis=0))  # border replicated


def test_cvpr24_three_folder_database_has_one_split_only(tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw")
    entries = [{"img_path": n, "age": 30, "folder": i % 3} for i, n in enumerate(cacd_names())]
    (tmp_path / "db.json").write_text(json.dumps(entries))
    result = _prepare(raw, tmp_path / "out", protocol=f"cvpr24:{tmp_path / 'db.json'}")
    assert result.report["protocol_info"]["split"] == {"train": [0], "val": [1], "test": [2]}
    with pytest.raises(UserError, match="--fold 1: expected 0..0"):
        _prepare(raw, tmp_path / "out", protocol=f"cvpr24:{tmp_path / 'db.json'}", fold=1)


# -- coral-cnn CSVs --------------------------------------------------------------------------------------------


def _write_coral(folder: Path, split_rows: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in split_rows.items():
        with open(folder / f"cacd_{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["", "file", "age"])
            for i, n in enumerate(names):
                w.writerow([i, Path(n).name, int(Path(n).name.split("_")[0]) - 14])  # coral: age - 14 labels
    return folder


def test_coral_csvs_are_imported_with_their_leaks_reported(tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw")
    names = cacd_names()
    by_person = {p: [n for n in names if f"_{p}_" in n] for p in CACD_PEOPLE}
    train = [n for p in CACD_PEOPLE[:6] for n in by_person[p]]
    valid = [n for p in CACD_PEOPLE[6:8] for n in by_person[p]]
    test = [n for p in CACD_PEOPLE[8:9] for n in by_person[p]]  # Emma_Watson is in no CSV
    planted = by_person["Mary_Kate_Olsen"][0]
    train.remove(planted)
    test.append(planted)  # subject leak: Mary-Kate in train and test
    test.append(by_person["Brad_Pitt"][1])  # same image listed in train and test
    folder = _write_coral(tmp_path / "coral", {"train": train, "valid": valid, "test": test})
    result = _prepare(raw, tmp_path / "out", protocol=f"coral:{folder}")
    assert result.report["leaky"] is True and result.report["subject_exclusive"] is False
    assert set(result.audit.leaking_subjects) == {"Mary_Kate_Olsen"}
    assert result.report["protocol_conflicts"] == [{"path": by_person["Brad_Pitt"][1], "splits": "train/test"}]
    assert result.report["protocol_info"]["age_label_offsets"] == {"14": 36}
    assert result.report["protocol_info"]["not_in_protocol"] == 4
    manifest = load_manifest(result.manifest, raw)
    assert {r.path: r.split for r in manifest.records}[planted] == "test"
    assert all(r.age == float(Path(r.path).name.split("_")[0]) for r in manifest.records)  # ages from the names


def test_coral_folder_without_the_expected_csvs_is_a_user_error(tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw")
    (tmp_path / "coral").mkdir()
    with pytest.raises(UserError, match="expected cacd_train.csv, _valid.csv and _test.csv"):
        _prepare(raw, tmp_path / "out", protocol=f"coral:{tmp_path / 'coral'}")
