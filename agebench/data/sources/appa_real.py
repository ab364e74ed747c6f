"""APPA-REAL: ``gt_avg_{train,valid,test}.csv`` + ``{train,valid,test}/<file>.jpg_face.jpg``, apparent and real age.

Why the CSV is the source of truth: it holds the labels and the official split. Quirks of the real archive,
handled here: the CSV names the original picture (``000000.jpg``) while we read the face crop the authors made
beside it (``000000.jpg_face.jpg``: rotated, 40 % margin; no detector needed); the split folder is ``valid``
(our ``val``); the apparent age is a mean of ~38 ratings (``apparent_age_avg``, fractional) kept with its
``apparent_age_std`` and ``num_ratings``. ``--target apparent`` (default) or ``real`` chooses the label; the
other is kept as a column. APPA-REAL has no identity labels. ``allcategories_{split}.csv`` (``file, gender, race,
...``), where present, gives ``gender`` (male/female -> M/F) and ``race`` (as the archive labels it: caucasian,
afroamerican, asian); without it the columns are empty. The per-rating ``gt_*.csv`` files are not needed.
CLAP2016 (clap2016.py) is the same family read by the same code.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agebench.data.sources import RawRecord, SourceScan, find_shallowest, normalize_gender
from agebench.errors import UserError

NAME = "appa-real"
DEFAULT_DETECTOR = "none"  # the archive's own face crops
DEFAULT_PROTOCOL = "official"
TARGETS = {"apparent": "apparent_age", "real": "real_age"}
SPLITS = {"train": "train", "valid": "val", "test": "test"}


@dataclass(frozen=True)
class Family:
    """How one member of the APPA-REAL family lays out its CSVs and images."""

    name: str
    csv_name: str  # with {split}: train, valid, test
    file_column: str
    columns: dict[str, str]  # CSV column -> our extra column
    image_of: Callable[[str], str]  # CSV file name -> image file name in the split folder
    targets: dict[str, str]
    default_detector: str
    note: str
    categories_name: str | None = None  # with {split}: per-image demographic categories, read where present


APPA_REAL = Family(
    name=NAME,
    csv_name="gt_avg_{split}.csv",
    file_column="file_name",
    columns={
        "apparent_age_avg": "apparent_age",
        "apparent_age_std": "apparent_age_std",
        "num_ratings": "num_ratings",
        "real_age": "real_age",
    },
    image_of=lambda name: f"{name}_face.jpg",
    targets=TARGETS,
    default_detector=DEFAULT_DETECTOR,
    note="APPA-REAL has no identity labels: the official split cannot be checked for subject leaks",
    categories_name="allcategories_{split}.csv",
)


def _categories(csv_file: Path) -> dict[str, dict[str, str]]:
    """file name -> {"gender": M/F or "", "race": the archive's label}; empty where the file is absent."""
    if not csv_file.is_file():
        return {}
    with open(csv_file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
        if "file" not in reader.fieldnames:
            raise UserError(f"{csv_file}: missing column file; expected file, gender, race, ...")
        return {
            (row.get("file") or "").strip(): {
                "gender": normalize_gender(row.get("gender")),
                "race": (row.get("race") or "").strip().lower(),
            }
            for row in reader
        }


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 120 else None


def scan_family(root: Path, family: Family, target: str) -> SourceScan:
    """Read the three split CSVs of one family member; rows without an image or a label are reported."""
    first = family.csv_name.format(split="train")
    train_csv = find_shallowest(root, first)
    if train_csv is None:
        names = ", ".join(family.csv_name.format(split=s) for s in SPLITS)
        raise UserError(f"{first} not found under {root}; expected {names} beside train/, valid/, test/")
    base = train_csv.parent
    label = family.targets[target]
    records: list[RawRecord] = []
    skipped: list[dict[str, str]] = []
    for split, ours in SPLITS.items():
        csv_file = base / family.csv_name.format(split=split)
        if not csv_file.is_file():
            raise UserError(f"{csv_file}: not found (the {split} split of {family.name})")
        categories = _categories(base / family.categories_name.format(split=split)) if family.categories_name else {}
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            required = [family.file_column, *family.columns]
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{csv_file}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
            reader.fieldnames = header
            for line, row in enumerate(reader, start=2):
                where = f"{csv_file.name}:{line}"
                name = (row[family.file_column] or "").strip()
                image = base / split / family.image_of(name)
                if not name or not image.is_file():
                    skipped.append({"path": f"{split}/{name}", "reason": f"{where}: {image.name} not found"})
                    continue
                extra = {ours_col: (row[col] or "").strip() for col, ours_col in family.columns.items()}
                if family.categories_name:
                    extra.update(categories.get(name, {"gender": "", "race": ""}))
                age = _number(extra.get(label))
                if age is None:
                    why = f"{label} {extra.get(label)!r} is not an age 0-120"
                    skipped.append({"path": f"{split}/{name}", "reason": f"{where}: {why}"})
                    continue
                rel = image.relative_to(root).as_posix()
                records.append(RawRecord(path=rel, age=age, extra={**extra, "target": target}, official_split=ours))
    if not records:
        raise UserError(f"{base}: none of the {family.name} CSV rows has an image under {base}/<split>/")
    records.sort(key=lambda r: r.path)
    return SourceScan(
        dataset=family.name,
        records=records,
        skipped=skipped,
        has_identities=False,
        identity_note=family.note,
        default_detector=family.default_detector,
        notes={"target": target, "label_column": label, "csv_folder": base.relative_to(root).as_posix() or "."},
    )


def scan(root: Path, target: str = "apparent") -> SourceScan:
    return scan_family(root, APPA_REAL, target)
