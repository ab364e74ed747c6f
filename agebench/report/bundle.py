"""Result bundles: what a leaderboard row needs, zipped with sha256 digests, so another lab can add it and check it.

A bundle holds, per cell ``<dataset>/<model>/seed<k>/``: metrics.json, every predictions*.csv, config.yaml and
cell.json where they exist, and never checkpoints or images (a row is recomputable from its predictions; the
weights stay with their owner). ``bundle.json`` lists the sha256 of every member and, per predictions file, a short
digest of each data row, so a changed prediction is named by file and row, not only by file. The zip is
deterministic (sorted members, fixed timestamps): the same cells give the same bytes. Reads result files only.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from agebench import __version__
from agebench.atomic import atomic_open
from agebench.errors import UserError
from agebench.report.results import find_cell_dirs

FORMAT = "agebench-bundle"
BUNDLE_VERSION = 1
INDEX = "bundle.json"
CELL_FILES = ("metrics.json", "config.yaml", "cell.json")  # plus predictions*.csv
ROW_DIGEST_CHARS = 16  # 64 bits per row: enough to tell an edit from chance, small beside the row itself
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SEED_DIR = re.compile(r"^seed\d+$")
_MEMBER = re.compile(r"^(metrics\.json|config\.yaml|cell\.json|predictions[^/]*\.csv)$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def row_digests(data: bytes) -> list[str]:
    """Short sha256 of each line after the header (line 2 is entry 0), ignoring a CR before the newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [_sha256(line.rstrip(b"\r"))[:ROW_DIGEST_CHARS] for line in lines[1:]]


def is_cell_dir(path: Path) -> bool:
    return path.is_dir() and bool(_SEED_DIR.match(path.name)) and (path / "metrics.json").is_file()


def expand_cells(paths: list[str | Path]) -> list[Path]:
    """Cell folders from the arguments: a cell folder is itself, a results folder gives every cell below it."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if is_cell_dir(path):
            out.append(path)
        elif path.is_dir() and find_cell_dirs(path):
            out += find_cell_dirs(path)
        elif path.is_dir():
            raise UserError(
                f"{path}: neither a result cell (<dataset>/<model>/seed<k>/metrics.json) nor a results folder"
            )
        else:
            raise UserError(f"{path}: no such folder")
    return out


def _cell_name(cell_dir: Path) -> str:
    parts = cell_dir.resolve().parts[-3:]
    if len(parts) != 3:
        raise UserError(f"{cell_dir}: a cell folder sits at <dataset>/<model>/seed<k>")
    return "/".join(parts)


def write_bundle(cell_dirs: list[Path], out: str | Path) -> dict[str, Any]:
    """Zip the cells' row files with their digests to ``out``; returns the index (bundle.json)."""
    members: dict[str, bytes] = {}
    cells: list[str] = []
    for cell_dir in cell_dirs:
        name = _cell_name(cell_dir)
        if name in cells:
            raise UserError(f"{cell_dir}: a second cell named {name}; bundle one results folder's cells at a time")
        cells.append(name)
        files = [cell_dir / f for f in CELL_FILES if (cell_dir / f).is_file()]
        files += sorted(cell_dir.glob("predictions*.csv"))
        for file in files:
            members[f"{name}/{file.name}"] = file.read_bytes()
    index = {
        "format": FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "agebench_version": __version__,
        "cells": sorted(cells),
        "sha256": {arc: _sha256(data) for arc, data in sorted(members.items())},
        "row_sha256": {
            arc: row_digests(data) for arc, data in sorted(members.items()) if arc.endswith(".csv")
        },  # fmt: skip
    }
    with atomic_open(out, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in [(INDEX, (json.dumps(index, indent=1) + "\n").encode()), *sorted(members.items())]:
            info = zipfile.ZipInfo(arc, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return index


@dataclass
class Bundle:
    """A bundle read into memory (zip or an unpacked folder): its index and its members' bytes."""

    path: Path
    index: dict[str, Any]
    members: dict[str, bytes]


def _safe_member(name: str) -> bool:
    """dataset/model/seed<k>/<row file>: nothing absolute, no '..', nothing that is not a row file."""
    parts = PurePosixPath(name).parts
    return (
        len(parts) == 4
        and not name.startswith("/")
        and all(p not in ("", ".", "..") and "\\" not in p for p in parts)
        and bool(_SEED_DIR.match(parts[2]))
        and bool(_MEMBER.match(parts[3]))
    )


def _check_index(path: Path, index: Any) -> dict[str, Any]:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"{path}: {INDEX} is not an agebench bundle index")
    if index.get("bundle_version") != BUNDLE_VERSION:
        raise UserError(f"{path}: bundle_version {index.get('bundle_version')!r}, this agebench reads {BUNDLE_VERSION}")
    if not isinstance(index.get("sha256"), dict):
        raise UserError(f"{path}: {INDEX} has no sha256 table")
    return index


def read_bundle(path: str | Path) -> Bundle:
    """A bundle zip or a folder holding bundle.json; a file that is neither is the user's error (exit 2)."""
    path = Path(path)
    if path.is_dir():
        if not (path / INDEX).is_file():
            raise UserError(f"{path}: no {INDEX}; not an unpacked bundle")
        try:
            index = json.loads((path / INDEX).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path / INDEX}: unreadable ({err})") from None
        members = {
            p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.glob("*/*/seed*/*"))
            if p.is_file() and _MEMBER.match(p.name)
        }
        return Bundle(path, _check_index(path, index), members)
    if not path.is_file():
        raise UserError(f"{path}: no such bundle")
    try:
        with zipfile.ZipFile(path) as zf:
            if INDEX not in zf.namelist():
                raise UserError(f"{path}: no {INDEX} inside; not an agebench bundle")
            index = json.loads(zf.read(INDEX).decode("utf-8"))
            members = {n: zf.read(n) for n in zf.namelist() if n != INDEX and not n.endswith("/")}
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable bundle zip ({err})") from None
    return Bundle(path, _check_index(path, index), members)


def check_bundle(bundle: Bundle) -> list[str]:
    """One line per member whose bytes differ from the index (naming the row where rows were digested), per
    member the index lists but the bundle lacks, and per member the bundle has but the index does not list."""
    where = bundle.path.name
    out = []
    digests: dict[str, str] = bundle.index["sha256"]
    rows: dict[str, list[str]] = bundle.index.get("row_sha256") or {}
    for arc in sorted(set(bundle.members) - set(digests)):
        out.append(f"{where}: {arc}: not listed in {INDEX} (added after bundling)")
    for arc, digest in sorted(digests.items()):
        if not _safe_member(arc):
            out.append(f"{where}: {arc}: not a result-cell file name; refused")
            continue
        data = bundle.members.get(arc)
        if data is None:
            out.append(f"{where}: {arc}: listed in {INDEX} but missing")
            continue
        if _sha256(data) == digest:
            continue
        listed = rows.get(arc)
        if not listed:
            out.append(f"{where}: {arc}: sha256 differs from {INDEX} (the file was changed after bundling)")
            continue
        now = row_digests(data)
        changed = [i for i, (a, b) in enumerate(zip(listed, now, strict=False)) if a != b]
        for i in changed[:20]:
            out.append(f"{where}: {arc}:{i + 2}: row differs from its digest in {INDEX} (changed after bundling)")
        if len(changed) > 20:
            out.append(f"{where}: {arc}: ... and {len(changed) - 20} more changed rows")
        if len(now) != len(listed):
            out.append(f"{where}: {arc}: {len(now)} data rows, {INDEX} lists {len(listed)}")
        if not changed and len(now) == len(listed):
            out.append(f"{where}: {arc}: sha256 differs from {INDEX} (header or line endings changed)")
    return out


def unpack(bundle: Bundle, into: Path) -> Path:
    """Write the bundle's listed, safely named members under ``into`` (a results folder); returns ``into``."""
    for arc in bundle.index["sha256"]:
        if not _safe_member(arc) or arc not in bundle.members:
            continue
        target = into.joinpath(*PurePosixPath(arc).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.members[arc])
    return into
