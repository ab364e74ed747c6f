"""UTKFace: ``[age]_[gender]_[race]_[yyyymmddHHMMSSFFF].jpg`` (also ``.jpg.chip.jpg``), aligned and cropped.

Why so lenient: a few published names are malformed (``61_1_20170109142408075.jpg`` lacks the race,
``53__0_20170116184028385.jpg`` has an empty gender). Their age is still unambiguous, so they are kept and
listed in the report. UTKFace has no identities: splits can only be random, never subject-exclusive.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from agebench.data.sources import RawRecord, SourceScan, walk_images
from agebench.errors import UserError

NAME = "utkface"
DEFAULT_DETECTOR = "none"  # already cropped faces
LAYOUT = "<age>_<gender>_<race>_<date>.jpg"
MAX_AGE = 116
GENDERS = {"0": "M", "1": "F"}
RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}
_SUFFIX = re.compile(r"(\.jpg\.chip\.jpg|\.jpg)$", re.IGNORECASE)
_DATE = re.compile(r"^\d{17}$")


def parse_name(name: str) -> tuple[dict[str, str] | None, str]:
    """(fields, problem): fields is None when no age can be read; problem is '' for a well-formed name."""
    match = _SUFFIX.search(name)
    if not match:
        return None, "not a .jpg"
    parts = name[: match.start()].split("_")
    age = parts[0]
    if not age.isdigit() or int(age) > MAX_AGE:
        return None, f"no age 0-{MAX_AGE} before the first '_'"
    fields = {"age": str(int(age))}
    if len(parts) == 4 and GENDERS.get(parts[1]) and RACES.get(parts[2]) and _DATE.match(parts[3]):
        return {**fields, "gender": GENDERS[parts[1]], "race": RACES[parts[2]]}, ""
    # Malformed: recover what is unambiguous. The date is the trailing 17-digit field when present.
    rest = parts[1:]
    if rest and _DATE.match(rest[-1]):
        rest = rest[:-1]
    if len(rest) == 2:
        if rest[0] in GENDERS:
            fields["gender"] = GENDERS[rest[0]]
        if rest[1] in RACES:
            fields["race"] = RACES[rest[1]]
    # one field missing: '1' could be a gender or a race, so neither is guessed
    if len(parts) != 4:
        why = f"{len(parts)} fields instead of 4"
    elif "" in parts:
        why = "an empty field"
    else:
        why = "gender, race or date out of range"
    kept = ", ".join(f"{k} {v}" for k, v in fields.items())
    return fields, f"malformed name ({why}; expected {LAYOUT}); kept {kept}"


def scan(root: Path) -> SourceScan:
    records: list[RawRecord] = []
    malformed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    well_formed = 0
    for rel in walk_images(root):
        fields, problem = parse_name(PurePosixPath(rel).name)
        if fields is None:
            skipped.append({"path": rel, "reason": problem})
            continue
        if problem:
            malformed.append({"path": rel, "reason": problem})
        else:
            well_formed += 1
        extra = {"gender": fields.get("gender", ""), "race": fields.get("race", "")}
        records.append(RawRecord(path=rel, age=float(fields["age"]), extra=extra))
    if not well_formed:
        raise UserError(f"no files matching {LAYOUT} under {root}")
    return SourceScan(
        dataset=NAME,
        records=records,
        malformed=malformed,
        skipped=skipped,
        has_identities=False,
        identity_note="UTKFace has no identity labels: splits are random (age-stratified), not subject-exclusive",
        default_detector=DEFAULT_DETECTOR,
    )
