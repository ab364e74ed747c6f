"""Raw data set importers: one module per data set, each turning a download into sorted, labelled records.

Every importer exposes ``scan(root) -> SourceScan``. Records are sorted by path so the result never depends on
the order the file system lists files in; names that do not parse are reported in ``skipped``/``malformed``,
never silently dropped and never a crash. A root that holds nothing of the expected layout is a UserError
naming the layout that was expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from agebench.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class RawRecord:
    """One image found under the raw root. ``group`` is what a split must keep together (subject or best guess)."""

    path: str  # POSIX path relative to the raw root
    age: float
    subject_id: str = ""
    group: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def split_key(self) -> str:
        return self.subject_id or self.group or self.path


@dataclass
class SourceScan:
    """What an importer found: usable records, names kept with a caveat, files it could not use."""

    dataset: str
    records: list[RawRecord]
    malformed: list[dict[str, str]] = field(default_factory=list)  # kept, but the name was not well formed
    skipped: list[dict[str, str]] = field(default_factory=list)  # not usable (no age, missing file...)
    has_identities: bool = False
    identity_note: str = ""
    default_detector: str = "none"


def walk_images(root: Path) -> Iterator[str]:
    """Image paths under root, relative and POSIX, in sorted order (os.walk order is not portable)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_dir = Path(folder).relative_to(root)
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                found.append((rel_dir / name).as_posix())
    yield from sorted(found)


def require_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"--root {path}: not a folder")
    return path


def _modules() -> dict[str, ModuleType]:
    from agebench.data.sources import afad, cacd, morph2, utkface

    return {"utkface": utkface, "afad": afad, "cacd": cacd, "morph2": morph2}


DATASETS = ("utkface", "afad", "cacd", "morph2")


def get_source(name: str) -> ModuleType:
    modules = _modules()
    if name not in modules:
        raise UserError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return modules[name]


def scan(name: str, root: str | os.PathLike[str]) -> SourceScan:
    return get_source(name).scan(require_root(root))
