"""Split rules: our seeded subject-exclusive folds, the CVPR 2024 benchmark's JSON folders, coral-cnn's CSVs.

Why folds are built the way they are: the same raw tree and seed must give the same manifest on any machine.
Units (subjects, or images where there are no identities) are sorted by (median age, sha256(seed, key)) and
dealt to the 5 folds in blocks of 5 with a seeded permutation per block. That is age-stratified, balanced to
within one unit per block, and depends on nothing but the labels and the seed (no listdir order, no set
iteration, no Python ``hash``). Fold k is the test split, fold (k+1) % 5 validation, the other three train.

``lopo`` (leave one person out) makes one subject the test set and takes validation from the same seeded
5-fold deal. ``official`` is the split a data set ships with (records carry it).

Imported protocols (``cvpr24:PATH``, ``coral:DIR``, ``official``) are replicated as published, leaks included:
leaks are measured and reported by prepare/audit, never refused.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agebench.data.sources import RawRecord, SourceScan
from agebench.errors import UserError

N_FOLDS = 5
Quad = tuple[float, ...]  # 8 numbers: (x, y) of the top-left, top-right, bottom-right, bottom-left corners

# The published splits of Paplham & Franc's unified benchmark (facebase/benchmarks/*.yaml), as given there:
# (train folders, val folders, test folders) for split 0..4. Splits 3 and 4 are not a plain rotation.
CVPR24_SPLITS = (
    ((0, 1, 2, 3, 4, 5), (6, 7), (8, 9)),
    ((2, 3, 4, 5, 6, 7), (8, 9), (0, 1)),
    ((4, 5, 6, 7, 8, 9), (0, 1), (2, 3)),
    ((5, 6, 7, 8, 9, 0), (1, 2), (3, 4)),
    ((6, 7, 8, 9, 0, 1), (2, 3), (4, 5)),
)
CVPR24_SINGLE = ((0,), (1,), (2,))  # CACD2000, CLAP2016, IMDB-Clean: one fixed split over folders 0, 1, 2
# A database whose folders go beyond 0-9 has one folder per person (FG-Net.json, folder = subject number): the
# benchmark uses it as a cross-dataset test set only, so its one "split" puts every folder in test.
CORAL_ALIASES = {
    "utkface": ("utk", "utkface"),
    "afad": ("afad",),
    "cacd": ("cacd",),
    "morph2": ("morph2", "morph"),
}


@dataclass
class Assigned:
    """A raw record placed in a split; ``age`` may be overridden by the protocol, ``crop`` given by it."""

    record: RawRecord
    split: str
    age: float
    crop: Quad | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ProtocolResult:
    name: str
    rows: list[Assigned]
    grouped_by: str  # what the split kept together: subject, afad_id prefix, image, or "as published"
    info: dict[str, object] = field(default_factory=dict)
    conflicts: list[dict[str, str]] = field(default_factory=list)  # one image listed in several splits


def fold_split_names(fold: int) -> dict[int, str]:
    """Fold index -> split for a chosen test fold k: k test, (k+1) % 5 val, the rest train."""
    check_fold(fold, N_FOLDS)
    return {f: "test" if f == fold else "val" if f == (fold + 1) % N_FOLDS else "train" for f in range(N_FOLDS)}


def check_fold(fold: int, n: int) -> None:
    if not 0 <= fold < n:
        raise UserError(f"--fold {fold}: expected 0..{n - 1}")


def assign_folds(unit_ages: dict[str, list[float]], seed: int, n_folds: int = N_FOLDS) -> dict[str, int]:
    """Age-stratified, seeded fold of every unit; depends only on the keys, their ages and the seed."""

    def tiebreak(key: str) -> str:
        return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()

    order = sorted(unit_ages, key=lambda k: (float(np.median(unit_ages[k])), tiebreak(k)))
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    for start in range(0, len(order), n_folds):
        perm = rng.permutation(n_folds)
        for offset, key in enumerate(order[start : start + n_folds]):
            folds[key] = int(perm[offset])
    return folds


def _merge(keys: list[str], linked: list[list[str]], key_of_path: dict[str, str]) -> dict[str, str]:
    """Union-find: unit key -> representative, so linked paths (identical images) share one unit."""
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for paths in linked:
        roots = sorted({find(key_of_path[p]) for p in paths if p in key_of_path})
        for other in roots[1:]:
            parent[other] = roots[0]  # the smallest key represents: independent of input order
    return {k: find(k) for k in keys}


def _five_folds(
    scan: SourceScan, seed: int, by_image: bool, linked: list[list[str]] | None
) -> tuple[dict[str, int], int]:
    """(path -> fold 0..4, units merged by ``linked``): our seeded, age-stratified deal of units to folds."""
    key_of_path = {r.path: (r.path if by_image else r.split_key) for r in scan.records}
    unit_of = _merge(sorted(set(key_of_path.values())), linked or [], key_of_path)
    units: dict[str, list[float]] = defaultdict(list)
    for r in scan.records:
        units[unit_of[key_of_path[r.path]]].append(r.age)
    folds = assign_folds(units, seed)
    merged = sum(1 for k, u in unit_of.items() if k != u)
    return {p: folds[unit_of[k]] for p, k in key_of_path.items()}, merged


def seeded_split(
    scan: SourceScan, seed: int, fold: int, *, by_image: bool = False, linked: list[list[str]] | None = None
) -> ProtocolResult:
    """Our protocol: subject-exclusive where identities exist (group-exclusive for AFAD), else per image.

    ``linked``: sets of paths that must share a split whatever their subject (identical image bytes), so our
    own splits never leak a duplicated picture.
    """
    names = fold_split_names(fold)
    fold_of, merged = _five_folds(scan, seed, by_image, linked)
    rows = [Assigned(r, names[fold_of[r.path]], r.age) for r in scan.records]
    if by_image:
        grouped = "image"
    elif scan.has_identities:
        grouped = "subject"
    elif any(r.group for r in scan.records):
        grouped = "file-name group (afad_id)"
    else:
        grouped = "image"
    info = {"n_folds": N_FOLDS, "test_fold": fold, "val_fold": (fold + 1) % N_FOLDS, "units_merged": merged}
    return ProtocolResult("random" if by_image else "subject-exclusive", rows, grouped, info)


def lopo_subjects(scan: SourceScan) -> list[str]:
    """The subjects in fold order: ``--fold K`` of ``lopo`` leaves out the K-th (FG-NET: fold 0 = subject 001)."""
    if not scan.has_identities:
        raise UserError(f"--protocol lopo: {scan.dataset} has no identities to leave out")
    return sorted({r.subject_id for r in scan.records if r.subject_id})


def lopo(scan: SourceScan, seed: int, fold: int, linked: list[list[str]] | None = None) -> ProtocolResult:
    """Leave one person out: subject K's images are the test set.

    Validation is the subject-exclusive fold after the one holding subject K in our seeded 5-fold deal (the
    same deal as ``subject-exclusive`` with this seed), so it never holds the test subject, is age-stratified,
    and is about a fifth of the other subjects; everyone else trains. Identical images of two subjects are
    linked for the validation choice only: the test set is exactly one subject.
    """
    subjects = lopo_subjects(scan)
    check_fold(fold, len(subjects))
    test_subject = subjects[fold]
    fold_of, merged = _five_folds(scan, seed, False, linked)
    test_fold = next(fold_of[r.path] for r in scan.records if r.subject_id == test_subject)
    val_fold = (test_fold + 1) % N_FOLDS

    def split(r: RawRecord) -> str:
        return "test" if r.subject_id == test_subject else "val" if fold_of[r.path] == val_fold else "train"

    rows = [Assigned(r, split(r), r.age) for r in scan.records]
    info = {
        "n_folds": len(subjects),
        "test_subject": test_subject,
        "val_rule": f"subjects of seeded 5-fold fold {val_fold} (the fold after the test subject's fold {test_fold})",
        "val_subjects": len({r.record.subject_id for r in rows if r.split == "val"}),
        "units_merged": merged,
    }
    return ProtocolResult("lopo", rows, "subject", info)


def official(scan: SourceScan) -> ProtocolResult:
    """The split the data set ships with (APPA-REAL, CLAP2016, IMDB-Clean CSVs), replicated as published."""
    if not any(r.official_split for r in scan.records):
        raise UserError(f"--protocol official: {scan.dataset} ships no split; use subject-exclusive or random")
    rows = [Assigned(r, r.official_split, r.age) for r in scan.records if r.official_split]
    info = {"not_in_protocol": len(scan.records) - len(rows)}
    return ProtocolResult("official", rows, "as published", info)


class PathMatcher:
    """Finds the raw image an external list means, by the longest common path suffix (case-insensitive).

    External lists are written relative to other roots ("AFAD/AFAD-Full/15/111/x.jpg", "x.jpg").
    """

    def __init__(self, paths: list[str]) -> None:
        self.index: dict[str, list[str]] = defaultdict(list)
        for p in paths:
            parts = p.lower().split("/")
            for i in range(len(parts)):
                self.index["/".join(parts[i:])].append(p)

    def match(self, external: str) -> str | None:
        parts = external.strip().replace("\\", "/").strip("/").lower().split("/")
        for i in range(len(parts)):
            hits = self.index.get("/".join(parts[i:]))
            if hits:
                return hits[0] if len(hits) == 1 else None
        return None


def _quad(value: object, where: str) -> Quad | None:
    if value in (None, "", []):
        return None
    if not isinstance(value, list) or len(value) != 8 or not all(isinstance(v, (int, float)) for v in value):
        raise UserError(f"{where}: aligned_bbox must be 8 numbers (x, y of 4 corners), got {value!r}")
    return tuple(float(v) for v in value)


def _cvpr24_load(json_file: str) -> tuple[Path, list[dict], tuple]:
    """(file, entries, split table) of a CVPR24 database JSON; the table depends on the folders it uses."""
    path = Path(json_file)
    if not path.is_file():
        raise UserError(f"--protocol cvpr24:{json_file}: file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of entries with img_path, age, folder")
    folders = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"img_path", "age", "folder"} <= e.keys():
            raise UserError(f"{path}: entry {i} lacks img_path, age or folder")
        folders.add(e["folder"])
    used = folders - {-1}
    if used <= {0, 1, 2}:
        return path, entries, (CVPR24_SINGLE,)
    if used <= set(range(10)):
        return path, entries, CVPR24_SPLITS
    return path, entries, (((), (), tuple(sorted(used))),)  # one folder per person (FG-Net.json): test only


def cvpr24(scan: SourceScan, json_file: str, fold: int) -> ProtocolResult:
    """Replicate a split of the CVPR24 unified benchmark from its database JSON (img_path, age, folder...)."""
    path, entries, table = _cvpr24_load(json_file)
    check_fold(fold, len(table))
    split_of = {f: s for s, fs in zip(("train", "val", "test"), table[fold], strict=True) for f in fs}
    by_path = {r.path: r for r in scan.records}
    matcher = PathMatcher(list(by_path))
    rows: dict[str, Assigned] = {}
    unmatched, unknown_age, duplicates, age_mismatch = [], 0, [], []
    for i, e in enumerate(entries):
        if e["folder"] not in split_of:
            continue  # folder -1 (excluded by the benchmark) or a folder this split does not use
        if e["age"] is None or float(e["age"]) < 0:
            unknown_age += 1
            continue
        raw = matcher.match(str(e["img_path"]))
        if raw is None:
            unmatched.append(str(e["img_path"]))
            continue
        if raw in rows:
            duplicates.append(raw)
            continue
        rec, age = by_path[raw], float(e["age"])
        if age != rec.age:
            age_mismatch.append({"path": raw, "file_age": f"{rec.age:g}", "json_age": f"{age:g}"})
        extra = {
            "cvpr24_id": str(e.get("id_num", "")),
            "alignment_source": str(e.get("alignment_source", "")),
        }
        rows[raw] = Assigned(rec, split_of[e["folder"]], age, _quad(e.get("aligned_bbox"), f"{path}: entry {i}"), extra)
    if not rows:
        raise UserError(f"{path}: none of its {len(entries)} img_path entries match an image under the root")
    info = {
        "json": str(path),
        "json_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "split": {s: list(fs) for s, fs in zip(("train", "val", "test"), table[fold], strict=True)},
        "n_folds": len(table),
        "databases": sorted({str(e.get("database", "")) for e in entries}),
        "unmatched_entries": len(unmatched),
        "unmatched_examples": unmatched[:20],
        "unknown_age_entries": unknown_age,
        "duplicate_entries": len(duplicates),
        "not_in_protocol": len(by_path) - len(rows),
        "age_mismatches": len(age_mismatch),
        "age_mismatch_examples": age_mismatch[:20],
    }
    return ProtocolResult("cvpr24", sorted(rows.values(), key=lambda a: a.record.path), "as published", info)


def _coral_files(folder: Path, dataset: str) -> dict[str, Path]:
    prefixes = sorted(p.name[: -len("_train.csv")] for p in folder.glob("*_train.csv"))
    chosen = [p for p in CORAL_ALIASES.get(dataset, ()) if p in prefixes] or (prefixes if len(prefixes) == 1 else [])
    if not chosen:
        names = "/".join(CORAL_ALIASES.get(dataset, (dataset,)))
        raise UserError(f"{folder}: expected {names}_train.csv, _valid.csv and _test.csv (coral-cnn split CSVs)")
    prefix = chosen[0]
    files = {"train": folder / f"{prefix}_train.csv", "test": folder / f"{prefix}_test.csv"}
    val = [folder / f"{prefix}_valid.csv", folder / f"{prefix}_val.csv"]
    files["val"] = next((p for p in val if p.is_file()), val[0])
    for f in files.values():
        if not f.is_file():
            raise UserError(f"{f}: not found (coral:DIR needs {prefix}_train.csv, _valid.csv and _test.csv)")
    return files


def coral(scan: SourceScan, folder_spec: str) -> ProtocolResult:
    """Replicate coral-cnn's split CSVs. Their ``age`` column is a class label (age minus the youngest age),
    so ages come from the raw data; the label offset is reported as a consistency check."""
    folder = Path(folder_spec)
    if not folder.is_dir():
        raise UserError(f"--protocol coral:{folder_spec}: not a folder")
    files = _coral_files(folder, scan.dataset)
    by_path = {r.path: r for r in scan.records}
    matcher = PathMatcher(list(by_path))
    rows: dict[str, Assigned] = {}
    conflicts, unmatched, offsets = [], [], defaultdict(int)
    for split in ("train", "val", "test"):
        with open(files[split], newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            col = next((header.index(c) for c in ("path", "file") if c in header), 0)
            age_col = header.index("age") if "age" in header else None
            for line, row in enumerate(reader, start=2):
                if not row or len(row) <= col:
                    continue
                raw = matcher.match(row[col])
                if raw is None:
                    unmatched.append(f"{files[split].name}:{line}: {row[col]}")
                    continue
                if raw in rows:
                    conflicts.append({"path": raw, "splits": f"{rows[raw].split}/{split}"})
                    continue
                rec = by_path[raw]
                if age_col is not None and len(row) > age_col:
                    try:
                        offsets[f"{rec.age - float(row[age_col]):g}"] += 1
                    except ValueError:
                        pass
                rows[raw] = Assigned(rec, split, rec.age)
    if not rows:
        raise UserError(f"{folder}: no row of the coral CSVs matches an image under the root")
    info = {
        "folder": str(folder),
        "files": {s: f.name for s, f in files.items()},
        "csv_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files.values()},
        "age_label_offsets": dict(sorted(offsets.items())),
        "unmatched_rows": len(unmatched),
        "unmatched_examples": unmatched[:20],
        "not_in_protocol": len(by_path) - len(rows),
    }
    result = ProtocolResult("coral", sorted(rows.values(), key=lambda a: a.record.path), "as published", info)
    result.conflicts = conflicts
    return result


def apply_protocol(
    spec: str, scan: SourceScan, *, seed: int = 0, fold: int = 0, linked: list[list[str]] | None = None
) -> ProtocolResult:
    """``subject-exclusive`` (default), ``random`` (per image, ignores identities), ``lopo`` (one subject out),
    ``official`` (the data set's own split), ``cvpr24:PATH.json``, ``coral:DIR``. ``linked`` path sets are kept
    together by our own protocols only."""
    kind, _, arg = spec.partition(":")
    if kind == "subject-exclusive" and not arg:
        return seeded_split(scan, seed, fold, linked=linked)
    if kind == "random" and not arg:
        return seeded_split(scan, seed, fold, by_image=True, linked=linked)
    if kind == "lopo" and not arg:
        return lopo(scan, seed, fold, linked)
    if kind == "official" and not arg:
        if fold:
            raise UserError(f"--fold {fold}: official is one fixed split, there are no folds to choose")
        return official(scan)
    if kind == "cvpr24" and arg:
        return cvpr24(scan, arg, fold)
    if kind == "coral" and arg:
        if fold:
            raise UserError(f"--fold {fold}: coral:DIR is one fixed split, there are no folds to choose")
        return coral(scan, arg)
    raise UserError(_unknown(spec))


def _unknown(spec: str) -> str:
    return f"--protocol {spec!r}: expected subject-exclusive, random, lopo, official, cvpr24:PATH.json or coral:DIR"


def check_protocol(spec: str, dataset: str, fold: int | None) -> None:
    """What can be checked of a protocol and a fold (None: ``--fold all``) before any image is read: the name,
    the cvpr24 JSON (exists, parses, has that split), the coral folder and CSVs, the fold of our 5-fold
    protocols, no fold for the fixed splits. Lopo's fold count needs the subjects: :func:`lopo` checks it."""
    kind, _, arg = spec.partition(":")
    if kind not in ("subject-exclusive", "random", "lopo", "official", "cvpr24", "coral") or (
        bool(arg) != (kind in ("cvpr24", "coral"))
    ):
        raise UserError(_unknown(spec))
    if kind in ("official", "coral"):
        if fold is None:
            raise UserError(f"--fold all: protocol {spec!r} is one fixed split; leave --fold out")
        if fold:
            raise UserError(
                f"--fold {fold}: {kind if kind == 'official' else 'coral:DIR'} is one fixed split, "
                "there are no folds to choose"
            )
        if kind == "coral":
            if not Path(arg).is_dir():
                raise UserError(f"--protocol coral:{arg}: not a folder")
            _coral_files(Path(arg), dataset)
    elif kind == "cvpr24":
        table = _cvpr24_load(arg)[2]
        if fold is not None:
            check_fold(fold, len(table))
    elif kind == "lopo":
        if fold is not None and fold < 0:
            raise UserError(f"--fold {fold}: expected 0..subjects-1 (lopo: fold K leaves out the K-th subject)")
    elif fold is not None:
        check_fold(fold, N_FOLDS)


def fold_count(spec: str, scan: SourceScan) -> int:
    """How many folds ``--fold all`` writes: 5 for ours, one per subject for lopo, the JSON's splits for cvpr24."""
    kind, _, arg = spec.partition(":")
    if kind in ("subject-exclusive", "random") and not arg:
        return N_FOLDS
    if kind == "lopo" and not arg:
        return len(lopo_subjects(scan))
    if kind == "cvpr24" and arg:
        return len(_cvpr24_load(arg)[2])
    raise UserError(f"--fold all: protocol {spec!r} is one fixed split; leave --fold out")
