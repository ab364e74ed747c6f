"""AgeDB: ``<id>_<Name>_<age>_<gender>.jpg`` (``0_MariaCallas_35_f.jpg``), manually annotated, in-the-wild photos.

Identity is the name field: everything between the leading number and the age, so a name holding an
underscore stays one person. The leading number is a picture id, kept as ``agedb_id``. A name whose gender
field is not m/f is kept (the age is unambiguous) and listed as malformed.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from agebench.data.sources import RawRecord, SourceScan, walk_images
from agebench.errors import UserError

NAME = "agedb"
DEFAULT_DETECTOR = "haar"  # loose photos, faces not cropped
LAYOUT = "<id>_<Name>_<age>_<m|f>.jpg"
MAX_AGE = 120
GENDERS = {"m": "M", "f": "F"}
_FILE = re.compile(r"^(\d+)_(.+)_(\d{1,3})_([^_.]*)\.jpe?g$", re.IGNORECASE)


def scan(root: Path) -> SourceScan:
    records: list[RawRecord] = []
    malformed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for rel in walk_images(root):
        match = _FILE.match(PurePosixPath(rel).name)
        if not match:
            skipped.append({"path": rel, "reason": f"name is not {LAYOUT}"})
            continue
        number, name, age, gender = match.groups()
        if int(age) > MAX_AGE:
            skipped.append({"path": rel, "reason": f"age {age} above {MAX_AGE}"})
            continue
        if gender.lower() not in GENDERS:
            malformed.append({"path": rel, "reason": f"gender {gender!r} is not m/f; kept without gender"})
        extra = {"gender": GENDERS.get(gender.lower(), ""), "agedb_id": number}
        records.append(RawRecord(path=rel, age=float(age), subject_id=name, extra=extra))
    if not records:
        raise UserError(f"no files matching {LAYOUT} under {root}")
    return SourceScan(
        dataset=NAME,
        records=records,
        malformed=malformed,
        skipped=skipped,
        has_identities=True,
        identity_note="identity = the name field of the file name",
        default_detector=DEFAULT_DETECTOR,
    )
