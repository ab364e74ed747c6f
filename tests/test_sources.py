"""Raw importers: fake trees in each data set's real layout (tiny JPEGs, real-style names) -> records.

The tree builders here are reused by the protocol, cache and audit tests.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from agebench.data.sources import scan
from agebench.data.sources.utkface import parse_name
from agebench.errors import UserError

UTK_MALFORMED = ("61_1_20170109142408075.jpg", "39_1_20170116174525125.jpg", "53__0_20170116184028385.jpg")
CACD_PEOPLE = (
    "Mary_Kate_Olsen",
    "Brad_Pitt",
    "Lizzie_Brocheré",
    "Nicole_'Snooki'_Polizzi",
    "J.J._Abrams",
    "Madonna",
    "Anne_Hathaway",
    "Jet_Li",
    "Samuel_L._Jackson",
    "Emma_Watson",
)


def write_jpeg(path: Path, key: int, size: tuple[int, int] = (20, 20)) -> None:
    """A small JPEG whose bytes are unique to ``key`` (seeded noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(key)
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def write_files(root: Path, names: list[str], reverse: bool = False) -> Path:
    """Write the files (in reverse creation order if asked); the bytes depend on the name only."""
    for name in reversed(names) if reverse else names:
        write_jpeg(root / name, sum(name.encode()) * 7919 + len(name))
    return root


def make_utkface(root: Path, reverse: bool = False) -> Path:
    names = [f"{age}_{i % 2}_{i % 5}_201701{i:011d}.jpg.chip.jpg" for i, age in enumerate(range(1, 100, 3))]
    return write_files(root, names + list(UTK_MALFORMED) + ["UTKFace_readme.jpg"], reverse)


def make_afad(root: Path) -> Path:
    names = []
    for i in range(30):
        age, gender = 15 + (i * 7) % 40, "111" if i % 3 else "112"
        for k in range(1 + i % 3):
            names.append(f"AFAD-Full/{age}/{gender}/{600000 + i}-{k}.jpg")
    names.append("AFAD-Full/20/111/odd_name.jpg")
    names.append("AFAD-Full/20/999/700000-0.jpg")  # not a gender folder: skipped
    (root / "AFAD-Full").mkdir(parents=True, exist_ok=True)
    (root / "AFAD-Full" / "AFAD-Full.txt").write_text("listing\n")
    return write_files(root, names)


def cacd_names() -> list[str]:
    names = []
    for p, person in enumerate(CACD_PEOPLE):
        for k in range(4):
            names.append(f"CACD2000/{16 + 4 * p + k}_{person}_{k + 1:04d}.jpg")
    return names


def make_cacd(root: Path, size: tuple[int, int] = (20, 20)) -> Path:
    for name in cacd_names():
        write_jpeg(root / name, sum(name.encode()) * 31 + len(name), size)
    return root


def make_morph(root: Path) -> Path:
    rows = []
    for subject in range(12):
        for k in range(3):
            age = 16 + 5 * subject + 2 * k
            photo = f"Album2/{subject + 1:06d}_{k}{'M' if subject % 2 else 'F'}{age}.JPG"
            write_jpeg(root / photo, subject * 100 + k, (24, 20))
            rows.append([f"{subject + 1:06d}", k, "", "", "B", "M" if subject % 2 else "F", "", age, 0, "", photo])
    rows.append(["000099", 0, "", "", "W", "M", "", 30, 0, "", "Album2/missing.JPG"])
    rows.append(["000098", 0, "", "", "W", "M", "", "n/a", 0, "", "Album2/000001_0F16.JPG"])
    with open(root / "morph_2008_nonCommercial.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "id_num",
                "picture_num",
                "dob",
                "doa",
                "race",
                "gender",
                "facial_hair",
                "age",
                "age_diff",
                "glasses",
                "photo",
            ]
        )
        w.writerows(rows)
    return root


def test_utkface_parses_ages_and_keeps_malformed_names(tmp_path: Path) -> None:
    found = scan("utkface", make_utkface(tmp_path))
    by_path = {r.path: r for r in found.records}
    assert len(found.records) == 33 + 3
    assert by_path["4_1_1_20170100000000001.jpg.chip.jpg"].age == 4
    assert by_path["4_1_1_20170100000000001.jpg.chip.jpg"].extra == {"gender": "F", "race": "black"}
    assert {m["path"] for m in found.malformed} == set(UTK_MALFORMED)
    assert by_path["61_1_20170109142408075.jpg"].age == 61
    assert by_path["53__0_20170116184028385.jpg"].extra == {"gender": "", "race": "white"}
    assert [s["path"] for s in found.skipped] == ["UTKFace_readme.jpg"]
    assert not found.has_identities and all(r.subject_id == "" for r in found.records)


@pytest.mark.parametrize(
    ("name", "age"),
    [("39_1_20170116174525125.jpg", "39"), ("116_0_4_20170116174525125.jpg", "116"), ("117_0_0_1.jpg", None)],
)
def test_utkface_name_parser_keeps_only_unambiguous_ages(name: str, age: str | None) -> None:
    fields, _ = parse_name(name)
    assert (fields or {}).get("age") == age


def test_afad_reads_age_and_gender_folders_and_groups_by_id(tmp_path: Path) -> None:
    found = scan("afad", make_afad(tmp_path))
    rec = {r.path: r for r in found.records}["AFAD-Full/22/111/600001-1.jpg"]
    assert rec.age == 22 and rec.extra == {"gender": "M", "afad_id": "600001"}
    assert rec.subject_id == "" and rec.group == "afad:600001"
    assert not found.has_identities
    assert [m["path"] for m in found.malformed] == ["AFAD-Full/20/111/odd_name.jpg"]
    assert [s["path"] for s in found.skipped] == ["AFAD-Full/20/999/700000-0.jpg"]


def test_cacd_identity_is_the_whole_multi_part_name(tmp_path: Path) -> None:
    found = scan("cacd", make_cacd(tmp_path))
    assert len(found.records) == 40 and found.has_identities
    rec = {r.path: r for r in found.records}["CACD2000/17_Mary_Kate_Olsen_0002.jpg"]
    assert rec.age == 17 and rec.subject_id == "Mary_Kate_Olsen"
    assert {r.subject_id for r in found.records} == set(CACD_PEOPLE)


def test_morph_reads_the_csv_and_lists_bad_rows(tmp_path: Path) -> None:
    found = scan("morph2", make_morph(tmp_path))
    assert len(found.records) == 36
    rec = {r.path: r for r in found.records}["Album2/000002_1M23.JPG"]
    assert rec.age == 23 and rec.subject_id == "2" and rec.extra["gender"] == "M"
    reasons = " ".join(s["reason"] for s in found.skipped)
    assert "image not found" in reasons and "is not a number" in reasons and len(found.skipped) == 2


def test_records_are_sorted_whatever_the_creation_order(tmp_path: Path) -> None:
    a = scan("utkface", make_utkface(tmp_path / "a"))
    b = scan("utkface", make_utkface(tmp_path / "b", reverse=True))
    assert [r.path for r in a.records] == [r.path for r in b.records] == sorted(r.path for r in a.records)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("utkface", "no files matching <age>_<gender>_<race>_<date>.jpg under"),
        ("afad", "no files matching <age>/<111|112>/<id>-<k>.jpg under"),
        ("cacd", "no files matching <age>_<First>_<Last>_<NNNN>.jpg under"),
        ("morph2", "morph_2008_nonCommercial.csv not found under"),
    ],
)
def test_wrong_layout_is_one_line_naming_the_expected_layout(
    dataset: str, expected: str, tmp_path: Path, cli_main, capsys
) -> None:
    raw = write_files(tmp_path / "raw", ["holiday/IMG_0001.jpg"])
    code = cli_main(["prepare", dataset, "--root", str(raw), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a folder"):
        scan("cacd", tmp_path / "nowhere")


@pytest.fixture
def cli_main(monkeypatch):
    """agebench.cli.main limited to the data commands, so these tests do not depend on the other subcommands."""
    import agebench.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", {k: cli.COMMANDS[k] for k in ("prepare", "audit")})
    return cli.main


@pytest.mark.parametrize("dataset", ["utkface", "afad", "cacd", "morph2"])
def test_protocol_card_matches_the_importer(dataset: str) -> None:
    import yaml

    from agebench.data.sources import get_source

    card = yaml.safe_load((Path(__file__).parents[1] / "data_manifests" / f"{dataset}.yaml").read_text())
    assert card["name"] == dataset and card["source"]["url"].startswith("http")
    assert "non-commercial" in card["licence"].lower() or "research use only" in card["licence"].lower()
    assert card["expected"]["images"] > 0 and len(card["expected"]["age_range"]) == 2
    assert card["default_protocol"]["protocol"] == "subject-exclusive"
    assert card["default_protocol"]["face_detector"] == get_source(dataset).DEFAULT_DETECTOR
    assert f"agebench prepare {dataset} " in card["verify"]["command"] and "sha256" in card["verify"]
