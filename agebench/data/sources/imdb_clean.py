"""IMDB-Clean (Lin et al., FP-Age 2021): ``imdb_{train,valid,test}_new.csv`` over the original IMDB-WIKI images.

Columns used: ``filename`` (``01/nm0000001_rm124825600_1899-5-10_1968.jpg``, relative to the ``imdb`` image
folder), ``age`` and the face box ``x_min, y_min, x_max, y_max`` (pixels of the original image); other columns
(gender, head pose...) are tolerated, ``gender`` is kept. The box becomes the record's crop (the square about
its centre, side = its longer side; ``--margin`` widens it), so no detector runs. Identity is the IMDb person id
``nm<digits>`` in the file name. The official split is not subject-exclusive between train and valid (the
authors keep test apart only): prepare reports those shared people as a leak. The ``*_new_1024.csv`` files
describe the ``imdb-clean-1024`` copies, on which the box is drawn into the pixels: not used.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path, PurePosixPath

from agebench.data.faces import box_quad
from agebench.data.sources import RawRecord, SourceScan, find_shallowest, normalize_gender
from agebench.errors import UserError

NAME = "imdb-clean"
DEFAULT_DETECTOR = "none"  # the CSV boxes are the crops
DEFAULT_PROTOCOL = "official"
CSV_NAME = "imdb_{split}_new.csv"
SPLITS = {"train": "train", "valid": "val", "test": "test"}
REQUIRED = ("filename", "age", "x_min", "y_min", "x_max", "y_max")
_PERSON = re.compile(r"(?:^|/)(nm\d+)_")


def _bases(root: Path, csv_dir: Path) -> list[Path]:
    """Where ``filename`` may be relative to: the FP-Age tree puts images in data/imdb beside csvs/."""
    candidates = [root / "imdb", root / "data" / "imdb", csv_dir.parent / "data" / "imdb", csv_dir / "imdb"]
    return [b for b in [*candidates, root, csv_dir] if b.is_dir()]


def _box(row: dict[str, str]) -> tuple[float, ...] | None:
    try:
        x0, y0, x1, y1 = (float(row[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        return None
    return box_quad(x0, y0, x1 - x0, y1 - y0)


def scan(root: Path) -> SourceScan:
    train_csv = find_shallowest(root, CSV_NAME.format(split="train"))
    if train_csv is None:
        names = ", ".join(CSV_NAME.format(split=s) for s in SPLITS)
        raise UserError(f"{CSV_NAME.format(split='train')} not found under {root}; expected {names}")
    csv_dir = train_csv.parent
    bases = _bases(root, csv_dir)
    records: list[RawRecord] = []
    skipped: list[dict[str, str]] = []
    malformed: list[dict[str, str]] = []
    listed: dict[str, str] = {}
    for split, ours in SPLITS.items():
        csv_file = csv_dir / CSV_NAME.format(split=split)
        if not csv_file.is_file():
            raise UserError(f"{csv_file}: not found (the {split} split of IMDB-Clean)")
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise UserError(f"{csv_file}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)}")
            reader.fieldnames = header
            for line, row in enumerate(reader, start=2):
                where = f"{csv_file.name}:{line}"
                name = (row["filename"] or "").strip().replace("\\", "/").lstrip("/")
                try:
                    age = float(row["age"])
                except (TypeError, ValueError):
                    age = math.nan
                if not 0 <= age <= 120:
                    skipped.append({"path": name, "reason": f"{where}: age {row['age']!r} is not 0-120"})
                    continue
                image = next((b / name for b in bases if name and ".." not in name and (b / name).is_file()), None)
                if image is None:
                    skipped.append({"path": name, "reason": f"{where}: image not found under {root}"})
                    continue
                rel = image.relative_to(root).as_posix()
                if rel in listed:
                    skipped.append({"path": rel, "reason": f"{where}: already listed in {listed[rel]}"})
                    continue
                listed[rel] = where
                person = _PERSON.search(PurePosixPath(name).as_posix())
                box = _box(row)
                if person is None:
                    malformed.append({"path": rel, "reason": "no nm<id> in the file name; no identity"})
                if box is None:
                    malformed.append({"path": rel, "reason": "no usable face box; whole image (centre square)"})
                records.append(
                    RawRecord(
                        path=rel,
                        age=age,
                        subject_id=person.group(1) if person else "",
                        extra={"gender": normalize_gender(row.get("gender"))},
                        official_split=ours,
                        crop=box,
                    )
                )
    if not records:
        raise UserError(f"{csv_dir}: none of the IMDB-Clean CSV rows has an image under {root} (or {root}/imdb)")
    records.sort(key=lambda r: r.path)
    return SourceScan(
        dataset=NAME,
        records=records,
        malformed=malformed,
        skipped=skipped,
        has_identities=True,
        identity_note="identity = the IMDb person id nm<digits> in the file name",
        default_detector=DEFAULT_DETECTOR,
        notes={"csv_folder": csv_dir.relative_to(root).as_posix() or ".", "boxes": "CSV x_min..y_max, squared"},
    )
