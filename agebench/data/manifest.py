"""The manifest contract: one CSV per prepared data set, validated the same way everywhere.

Columns: ``path`` (relative to the data root), ``age`` (years, float), ``subject_id`` (string, empty where the
data set has no identities), ``split`` (train/val/test), then any optional columns (gender, race, bbox...).
Every problem a user can cause is a :class:`ManifestError`: one line naming the file and the row.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agebench.atomic import atomic_open
from agebench.errors import UserError
from agebench.hashing import file_sha256, split_sha256

REQUIRED_COLUMNS = ("path", "age", "subject_id", "split")
# Demographic columns carried from the manifest into predictions.csv (agebench 0.6), so the report layer can
# break errors down by group from result files alone. gender: M / F (empty: unknown); race: as each data set
# labels it (its protocol card says how); skin_tone: the synthetic set's dark / medium / light.
DEMOGRAPHIC_COLUMNS = ("gender", "race", "skin_tone")
SPLITS = ("train", "val", "test")
MAX_AGE = 120.0


class ManifestError(UserError):
    """A malformed manifest: the message names the file and, where there is one, the row."""


@dataclass(frozen=True)
class Record:
    """One image of a manifest. ``row`` is the CSV line number (the header is line 1)."""

    path: str
    age: float
    subject_id: str
    split: str
    row: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    """A validated manifest: its file, the data root its paths are relative to, and its records."""

    file: Path
    root: Path
    records: list[Record]
    extra_columns: tuple[str, ...] = ()

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def image_path(self, record: Record) -> Path:
        return self.root / record.path

    @property
    def has_identities(self) -> bool:
        return any(r.subject_id for r in self.records)

    def leaks(self) -> dict[str, list[str]]:
        """Subjects that appear in more than one split (subject -> sorted splits). Identity-less rows never leak."""
        splits_of: dict[str, set[str]] = defaultdict(set)
        for r in self.records:
            if r.subject_id:
                splits_of[r.subject_id].add(r.split)
        return {s: sorted(sp, key=SPLITS.index) for s, sp in sorted(splits_of.items()) if len(sp) > 1}

    def sha256(self) -> str:
        return file_sha256(self.file)

    def split_sha256(self, name: str = "test") -> str:
        """The content key of one split (hashing.split_sha256): unchanged by new columns or row order."""
        return split_sha256((r.path, r.age) for r in self.split(name))

    @property
    def demographic_columns(self) -> tuple[str, ...]:
        return tuple(c for c in DEMOGRAPHIC_COLUMNS if c in self.extra_columns)


def _check_relative(path: str, where: str) -> None:
    if not path:
        raise ManifestError(f"{where}: empty path")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise ManifestError(f"{where}: path {path!r} is absolute; paths must be relative to the data root")
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise ManifestError(f"{where}: path {path!r} escapes the data root ('..')")


def _parse_age(text: str, where: str) -> float:
    try:
        age = float(text)
    except ValueError:
        raise ManifestError(f"{where}: age {text!r} is not a number") from None
    if math.isnan(age) or math.isinf(age):
        raise ManifestError(f"{where}: age {text!r} is not a finite number")
    if age < 0 or age > MAX_AGE:
        raise ManifestError(f"{where}: age {age:g} is outside 0..{MAX_AGE:g} years")
    return age


def load_manifest(
    file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    check_files: bool = True,
    required_splits: Iterable[str] = SPLITS,
) -> Manifest:
    """Read and validate a manifest; ``root`` defaults to the manifest's folder.

    Raises ManifestError on the first problem found, naming the file and the row.
    """
    file = Path(file)
    if not file.is_file():
        raise ManifestError(f"{file}: manifest not found")
    root = Path(root) if root is not None else file.parent
    if check_files and not root.is_dir():
        raise ManifestError(f"{file}: data root {root} is not a folder")
    with open(file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{file}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
        extra_columns = tuple(c for c in header if c not in REQUIRED_COLUMNS)
        records: list[Record] = []
        seen: dict[str, int] = {}
        for line, raw in enumerate(reader, start=2):
            where = f"{file}:{line}"
            if None in raw or any(v is None for v in raw.values()):
                raise ManifestError(f"{where}: wrong number of fields")
            path = raw["path"].strip()
            _check_relative(path, where)
            if path in seen:
                raise ManifestError(f"{where}: duplicate path {path!r} (first at row {seen[path]})")
            seen[path] = line
            age = _parse_age(raw["age"].strip(), where)
            split = raw["split"].strip()
            if split not in SPLITS:
                raise ManifestError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            if check_files and not (root / path).is_file():
                raise ManifestError(f"{where}: image {path!r} not found under {root}")
            extra = {c: raw[c] for c in extra_columns}
            records.append(Record(path, age, raw["subject_id"].strip(), split, line, extra))
    if not records:
        raise ManifestError(f"{file}: no rows")
    present = {r.split for r in records}
    for split in required_splits:
        if split not in present:
            raise ManifestError(f"{file}: split {split!r} is empty")
    return Manifest(file=file, root=root, records=records, extra_columns=extra_columns)


def format_age(age: float) -> str:
    """Ages are written with up to 4 decimals, so the same ages always give the same bytes."""
    return f"{age:.4f}".rstrip("0").rstrip(".")


def write_manifest(rows: Iterable[Mapping[str, object]], file: str | os.PathLike[str]) -> Path:
    """Write rows (dicts with the required columns, optional extras) atomically and deterministically.

    Extra columns follow the required ones in first-seen order; rows keep their given order.
    """
    rows = list(rows)
    extras: list[str] = []
    for r in rows:
        for key in r:
            if key not in REQUIRED_COLUMNS and key not in extras:
                extras.append(key)
    file = Path(file)
    with atomic_open(file, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, *extras])
        for r in rows:
            writer.writerow(
                [r["path"], format_age(float(r["age"])), r.get("subject_id", "") or "", r["split"]]
                + ["" if r.get(c) is None else r.get(c) for c in extras]
            )
    return file


def split_summary(manifest: Manifest) -> list[dict[str, object]]:
    """Images, subjects and age range per split, in train/val/test order."""
    out = []
    for split in SPLITS:
        recs = manifest.split(split)
        if not recs:
            continue
        ages = [r.age for r in recs]
        subjects = {r.subject_id for r in recs if r.subject_id}
        out.append(
            {
                "split": split,
                "images": len(recs),
                "subjects": len(subjects) if subjects else None,
                "age_min": min(ages),
                "age_max": max(ages),
                "age_mean": sum(ages) / len(ages),
            }
        )
    return out
