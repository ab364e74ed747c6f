"""Raw data set importers: one module per data set, each turning a download into sorted, labelled records.

Every importer exposes ``scan(root) -> SourceScan``. Records are sorted by path so the result never depends on
the order the file system lists files in; names that do not parse are reported in ``skipped``/``malformed``,
never silently dropped and never a crash. A root that holds nothing of the expected layout is a UserError
naming the layout that was expected.

A module may also define ``DEFAULT_PROTOCOL`` (``official`` where the data set ships its own split) and
``TARGETS`` (label name -> ``extra`` column, for sets with several age labels; ``scan(root, target=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from agebench.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# One gender vocabulary in every manifest (agebench 0.6, issue 22): M / F, empty where unknown.
_GENDER_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def normalize_gender(text: str | None) -> str:
    """``male``, ``m``, ``M`` -> ``M``; ``female``, ``f``, ``F`` -> ``F``; anything else (or nothing) -> empty."""
    return _GENDER_WORDS.get((text or "").strip().lower(), "")


@dataclass(frozen=True)
class RawRecord:
    """One image found under the raw root. ``group`` is what a split must keep together (subject or best guess)."""

    path: str  # POSIX path relative to the raw root
    age: float
    subject_id: str = ""
    group: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    official_split: str = ""  # train/val/test where the data set ships its own split (protocol ``official``)
    crop: tuple[float, ...] | None = None  # a face box the data set itself gives, as a quad (see data/faces.py)

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
    notes: dict[str, object] = field(default_factory=dict)  # quirks kept, and how (copied into the report)


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
    from agebench.data.sources import afad, agedb, appa_real, cacd, clap2016, fgnet, imdb_clean, morph2, utkface

    modules = (utkface, afad, cacd, morph2, agedb, fgnet, appa_real, clap2016, imdb_clean)
    return {m.NAME: m for m in modules}


DATASETS = ("utkface", "afad", "cacd", "morph2", "agedb", "fgnet", "appa-real", "clap2016", "imdb-clean")


def get_source(name: str) -> ModuleType:
    modules = _modules()
    if name not in modules:
        raise UserError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return modules[name]


def default_protocol(name: str) -> str:
    return getattr(get_source(name), "DEFAULT_PROTOCOL", "subject-exclusive")


def scan(name: str, root: str | os.PathLike[str], target: str | None = None) -> SourceScan:
    """Records of one data set; ``target`` picks the age label where the set has several (APPA-REAL)."""
    module = get_source(name)
    targets = getattr(module, "TARGETS", None)
    if target is None:
        return module.scan(require_root(root))
    if not targets:
        raise UserError(f"--target {target}: {name} has one age label only (--target is for appa-real, clap2016)")
    if target not in targets:
        raise UserError(f"--target {target}: expected one of {', '.join(targets)} for {name}")
    return module.scan(require_root(root), target=target)


def find_shallowest(root: Path, name: str) -> Path | None:
    """The file called ``name`` nearest to root (ties: path order); None if there is none."""
    hits = sorted(root.rglob(name), key=lambda p: (len(p.relative_to(root).parts), p.as_posix()))
    return hits[0] if hits else None
