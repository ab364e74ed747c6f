"""AFAD-Full: ``<age>/<111|112>/<id>-<k>.jpg`` (111 male, 112 female), faces already cropped.

Identities: AFAD documents none. The ``<id>`` prefix groups pictures that the CVPR 2024 unified benchmark
treats as one person, but the data set's authors never say so. We therefore claim no identities
(``subject_id`` empty, ``subject_exclusive: false``) yet keep every ``<id>`` group inside one split: if the
prefix is an identity this prevents leaks, if it is not it costs nothing. The prefix is kept as ``afad_id``.
"""

from __future__ import annotations

import re
from pathlib import Path

from agebench.data.sources import RawRecord, SourceScan, walk_images
from agebench.errors import UserError

NAME = "afad"
DEFAULT_DETECTOR = "none"  # already cropped faces
LAYOUT = "<age>/<111|112>/<id>-<k>.jpg"
GENDERS = {"111": "M", "112": "F"}
_FILE = re.compile(r"^(\d+)-(\d+)\.jpg$", re.IGNORECASE)


def scan(root: Path) -> SourceScan:
    records: list[RawRecord] = []
    malformed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for rel in walk_images(root):
        parts = rel.split("/")
        if len(parts) < 3 or not parts[-3].isdigit() or parts[-2] not in GENDERS:
            skipped.append({"path": rel, "reason": f"not in the {LAYOUT} layout"})
            continue
        age, gender, name = int(parts[-3]), GENDERS[parts[-2]], parts[-1]
        match = _FILE.match(name)
        if match:
            afad_id = match.group(1)
        else:
            afad_id = ""
            malformed.append({"path": rel, "reason": "file name is not <id>-<k>.jpg; kept as its own group"})
        records.append(
            RawRecord(
                path=rel,
                age=float(age),
                group=f"afad:{afad_id}" if afad_id else "",
                extra={"gender": gender, "afad_id": afad_id},
            )
        )
    if not records:
        raise UserError(f"no files matching {LAYOUT} under {root}")
    return SourceScan(
        dataset=NAME,
        records=records,
        malformed=malformed,
        skipped=skipped,
        has_identities=False,
        identity_note=(
            "AFAD documents no identities: splits keep each <id> file-name prefix in one split "
            "(the CVPR24 benchmark reads it as a person), but are not claimed subject-exclusive"
        ),
        default_detector=DEFAULT_DETECTOR,
    )
