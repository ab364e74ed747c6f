"""FG-NET: 1,002 scanned photos of 82 people, ``<subject 3 digits>A<age 2 digits>[a|b].JPG``.

Quirks of the real archive, kept and reported: the ``A`` and the extension come in either case
(``001A02.JPG``, ``001a02.jpg``); a trailing ``a``/``b`` marks a second photo of the same person at the same
age (``010A07a.JPG``, ``010A07b.JPG``). Those are different pictures, and the published protocols (leave one
person out over all 1,002 images; the CVPR 2024 benchmark's FG-Net.json) keep both, so we keep both: they
always share a subject, so they share a split. Two names that differ only by case are one picture listed twice:
the first (path order) is kept, the other skipped. The landmark files (``points/*.pts``) are not images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

from agebench.data.sources import RawRecord, SourceScan, walk_images
from agebench.errors import UserError

NAME = "fgnet"
DEFAULT_DETECTOR = "haar"  # whole scanned photos
LAYOUT = "<subject 3 digits>A<age 2 digits>[a|b].JPG"
_FILE = re.compile(r"^(\d{3})a(\d{2})([ab]?)\.jpe?g$", re.IGNORECASE)


def scan(root: Path) -> SourceScan:
    records: list[RawRecord] = []
    skipped: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    same_age: dict[tuple[str, str], list[str]] = defaultdict(list)
    lower_case = 0
    for rel in walk_images(root):
        name = PurePosixPath(rel).name
        match = _FILE.match(name)
        if not match:
            skipped.append({"path": rel, "reason": f"name is not {LAYOUT}"})
            continue
        subject, age, photo = match.group(1), match.group(2), match.group(3).lower()
        key = f"{subject}A{age}{photo}"
        if key in seen:
            skipped.append({"path": rel, "reason": f"same picture as {seen[key]} (names differ by case only)"})
            continue
        seen[key] = rel
        lower_case += name[3] == "a"
        same_age[(subject, age)].append(rel)
        records.append(RawRecord(path=rel, age=float(age), subject_id=subject, extra={"fgnet_photo": photo}))
    if not records:
        raise UserError(f"no files matching {LAYOUT} under {root}")
    pairs = [paths for paths in same_age.values() if len(paths) > 1]
    return SourceScan(
        dataset=NAME,
        records=records,
        skipped=skipped,
        has_identities=True,
        identity_note="identity = the 3-digit subject number of the file name",
        default_detector=DEFAULT_DETECTOR,
        notes={
            "same_age_photos": len(pairs),
            "same_age_photo_groups": pairs,
            "same_age_policy": "kept all (a/b are different photos; published LOPO results count all 1,002)",
            "lower_case_a_names": lower_case,
        },
    )
