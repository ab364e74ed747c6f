"""CACD2000: ``<age>_<First>_<Last>_<NNNN>.jpg``; the name may hold more parts (``23_Mary_Kate_Olsen_0001``).

Identity is the celebrity's name: everything between the age and the 4-digit picture number.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from agebench.data.sources import RawRecord, SourceScan, walk_images
from agebench.errors import UserError

NAME = "cacd"
DEFAULT_DETECTOR = "haar"  # pre-cropped faces need none; loose crops get a detector
LAYOUT = "<age>_<First>_<Last>_<NNNN>.jpg"
_FILE = re.compile(r"^(\d{1,3})_(.+)_(\d+)\.jpg$", re.IGNORECASE)


def scan(root: Path) -> SourceScan:
    records: list[RawRecord] = []
    skipped: list[dict[str, str]] = []
    malformed: list[dict[str, str]] = []
    for rel in walk_images(root):
        match = _FILE.match(PurePosixPath(rel).name)
        if not match:
            skipped.append({"path": rel, "reason": f"name is not {LAYOUT}"})
            continue
        age, name, number = int(match.group(1)), match.group(2), match.group(3)
        if len(number) != 4:
            malformed.append({"path": rel, "reason": f"picture number {number!r} is not 4 digits"})
        records.append(RawRecord(path=rel, age=float(age), subject_id=name, extra={}))
    if not records:
        raise UserError(f"no files matching {LAYOUT} under {root}")
    return SourceScan(
        dataset=NAME,
        records=records,
        malformed=malformed,
        skipped=skipped,
        has_identities=True,
        identity_note="identity = the celebrity name in the file name",
        default_detector=DEFAULT_DETECTOR,
    )
