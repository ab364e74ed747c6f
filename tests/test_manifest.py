"""The manifest contract, checked through `agebench audit` as a user would call it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.cli import main
from agebench.data.manifest import load_manifest, write_manifest

HEADER = "path,age,subject_id,split\n"


def _write(root: Path, body: str, header: str = HEADER, images: tuple[str, ...] = ("a.jpg", "b.jpg", "c.jpg")) -> Path:
    for name in images:
        (root / name).write_bytes(name.encode())
    manifest = root / "m.csv"
    manifest.write_text(header + body)
    return manifest


GOOD = "a.jpg,20,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n"


def _audit(manifest: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["audit", str(manifest), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_manifest_prints_summary_and_exits_0(tmp_path, capsys):
    code, out, err = _audit(_write(tmp_path, GOOD), capsys)
    assert code == 0, err
    for split in ("train", "val", "test"):
        assert split in out
    assert "20-20" in out and "subject-exclusive" in out


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        ("path,age,split\n", "a.jpg,20,train\n", "missing column(s) subject_id"),
        (HEADER, "a.jpg,twenty,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n", "m.csv:2: age 'twenty' is not a number"),
        (HEADER, "a.jpg,-1,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n", "m.csv:2: age -1 is outside 0..120"),
        (HEADER, "a.jpg,20,s1,train\nb.jpg,121,s2,val\nc.jpg,40,s3,test\n", "m.csv:3: age 121 is outside 0..120"),
        (HEADER, "a.jpg,nan,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n", "m.csv:2: age 'nan' is not a finite"),
        (HEADER, "a.jpg,20,s1,train\na.jpg,30,s2,val\nc.jpg,40,s3,test\n", "m.csv:3: duplicate path 'a.jpg'"),
        (HEADER, "/etc/a.jpg,20,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n", "path '/etc/a.jpg' is absolute"),
        (HEADER, "../a.jpg,20,s1,train\nb.jpg,30,s2,val\nc.jpg,40,s3,test\n", "m.csv:2: path '../a.jpg' escapes"),
        (HEADER, "a.jpg,20,s1,train\nb.jpg,30,s2,val\nz.jpg,40,s3,test\n", "m.csv:4: image 'z.jpg' not found"),
        (HEADER, "a.jpg,20,s1,train\nb.jpg,30,s2,val\n", "split 'test' is empty"),
        (HEADER, "a.jpg,20,s1,train\nb.jpg,30,s2,valid\nc.jpg,40,s3,test\n", "m.csv:3: split 'valid' is not one of"),
    ],
    ids=[
        "missing-column",
        "non-numeric",
        "negative",
        "over-120",
        "nan",
        "duplicate",
        "absolute",
        "escapes",
        "missing-image",
        "empty-split",
        "bad-split",
    ],
)
def test_malformed_manifest_is_one_line_exit_2(tmp_path, capsys, header, body, expected):
    code, out, err = _audit(_write(tmp_path, body, header), capsys)
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "m.csv" in err


def test_leaking_subject_exits_1_and_names_it(tmp_path, capsys):
    body = "a.jpg,20,s1,train\nb.jpg,30,s1,test\nc.jpg,40,s3,val\n"
    code, out, _ = _audit(_write(tmp_path, body), capsys)
    assert code == 1
    assert "LEAK" in out and "s1" in out


def test_root_option_resolves_paths_elsewhere(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (data / name).write_bytes(name.encode())
    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER + GOOD)
    assert _audit(manifest, capsys)[0] == 2
    assert _audit(manifest, capsys, "--root", str(data))[0] == 0


def test_write_then_load_round_trips_and_is_byte_stable(tmp_path):
    rows = [
        {"path": "x/1.jpg", "age": 21.5, "subject_id": "a", "split": "train", "gender": "f"},
        {"path": "x/2.jpg", "age": 30, "subject_id": "", "split": "val"},
        {"path": "x/3.jpg", "age": 44.25, "subject_id": "b", "split": "test", "gender": "m"},
    ]
    first = write_manifest(rows, tmp_path / "one.csv").read_bytes()
    second = write_manifest(rows, tmp_path / "two.csv").read_bytes()
    assert first == second
    manifest = load_manifest(tmp_path / "one.csv", check_files=False)
    assert [r.age for r in manifest.records] == [21.5, 30.0, 44.25]
    assert manifest.extra_columns == ("gender",)
    assert manifest.records[1].extra["gender"] == ""
    assert manifest.leaks() == {}
