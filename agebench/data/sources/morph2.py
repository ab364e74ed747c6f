"""MORPH II (non-commercial release): ``morph_2008_nonCommercial.csv`` lists every picture.

Columns used: ``id_num`` (the subject: identity), ``age``, ``photo`` (image path relative to the CSV's folder,
or to the root), and ``gender``/``race`` when present. Rows whose photo is missing or whose age is not a number
are listed in the report, not used.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from agebench.data.sources import RawRecord, SourceScan, normalize_gender
from agebench.errors import UserError

NAME = "morph2"
DEFAULT_DETECTOR = "haar"  # pre-cropped faces need none; loose crops get a detector
CSV_NAME = "morph_2008_nonCommercial.csv"
REQUIRED = ("id_num", "age", "photo")


def find_csv(root: Path) -> Path:
    """The shallowest morph_2008_nonCommercial.csv under root (the release unpacks into a folder or two)."""
    hits = sorted(root.rglob(CSV_NAME), key=lambda p: (len(p.relative_to(root).parts), p.as_posix()))
    if not hits:
        raise UserError(f"{CSV_NAME} not found under {root}")
    return hits[0]


def _resolve(root: Path, csv_dir: Path, photo: str) -> str | None:
    photo = photo.strip().replace("\\", "/").lstrip("/")
    if not photo or ".." in PurePosixPath(photo).parts:
        return None
    for base in (csv_dir, root):
        if (base / photo).is_file():
            return (base / photo).relative_to(root).as_posix()
    return None


def scan(root: Path) -> SourceScan:
    csv_file = find_csv(root)
    records: list[RawRecord] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    with open(csv_file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise UserError(f"{csv_file}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)}")
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            where = f"{CSV_NAME}:{line}"
            photo = (row.get("photo") or "").strip()
            try:
                age = float(row["age"])
            except (TypeError, ValueError):
                skipped.append({"path": photo, "reason": f"{where}: age {row.get('age')!r} is not a number"})
                continue
            subject = (row.get("id_num") or "").strip()
            if not subject:
                skipped.append({"path": photo, "reason": f"{where}: empty id_num"})
                continue
            rel = _resolve(root, csv_file.parent, photo)
            if rel is None:
                skipped.append({"path": photo, "reason": f"{where}: image not found under {root}"})
                continue
            if rel in seen:
                skipped.append({"path": rel, "reason": f"{where}: listed twice"})
                continue
            seen.add(rel)
            extra = {"gender": normalize_gender(row.get("gender")), "race": (row.get("race") or "").strip()}
            records.append(RawRecord(path=rel, age=age, subject_id=subject.lstrip("0") or "0", extra=extra))
    if not records:
        raise UserError(f"{csv_file}: none of its photos were found under {root} (photo paths are relative to it)")
    records.sort(key=lambda r: r.path)
    return SourceScan(
        dataset=NAME,
        records=records,
        skipped=skipped,
        has_identities=True,
        identity_note="identity = id_num of morph_2008_nonCommercial.csv",
        default_detector=DEFAULT_DETECTOR,
    )
