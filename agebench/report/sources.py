"""Several results folders and bundles read as one set of cells, and which of their test splits may be pooled.

One folder reads exactly as before (no labels, the same cell ids), and so does one bundle, so a bundle's
leaderboard equals its folder's. With several sources every cell carries its source's label (the folder's name,
the bundle file's stem) in ``origin`` and its id, so the same model and seed from two labs stay two rows. Cells
of a data set are pooled and paired only where the test split's content is the same: the digest of the sorted
(path, age) pairs of predictions.csv (Predictions.split_key; paths as predictions.csv records them, relative to
the data set's root like the manifest's, ages to 1e-3; no other column and not the manifest file's bytes). The
first source listed that has a data set sets its reference split; a cell on another split goes to a table of
its own (``<dataset> [test split <digest>]``) with the reason, and is never paired with the reference table.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from agebench.errors import UserError
from agebench.report.bundle import check_bundle, read_bundle, unpack
from agebench.report.folds import load_cells
from agebench.report.results import Cell

SPLIT_DIGEST_CHARS = 8


def _label(path: Path) -> str:
    return path.stem if path.is_file() else path.resolve().name


def labels_for(paths: list[Path]) -> list[str]:
    """Short, distinct source labels: the folder's name or the bundle's stem, else the path as given."""
    labels = [_label(p) for p in paths]
    counts = Counter(labels)
    labels = [str(p) if counts[lab] > 1 else lab for p, lab in zip(paths, labels, strict=True)]
    seen: Counter[str] = Counter()
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def _load_one(path: Path, verify: bool, stack: ExitStack) -> tuple[list[Cell], str | None]:
    """The cells of a results folder or a bundle (unpacked into a temporary folder that ``stack`` removes)."""
    if path.is_dir() and not (path / "bundle.json").is_file():
        return load_cells(path, verify=verify), None
    if not path.exists():
        raise UserError(f"{path}: no such results folder or bundle")
    bundle = read_bundle(path)
    problems = check_bundle(bundle)
    root = unpack(bundle, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agebench-bundle-"))))
    cells = load_cells(root, verify=verify)
    out = []
    for cell in cells:
        mine = tuple(p for p in problems if f" {cell.rel}/" in p)
        out.append(replace(cell, bundle=str(path), warnings=cell.warnings + mine))
    return out, str(path)


def load_sources(paths: list[str | Path], verify: bool, stack: ExitStack) -> list[Cell]:
    """Every cell of every source; several sources get labels and the test-split check (:func:`assign_splits`)."""
    if not paths:
        raise UserError("give at least one results folder or bundle")
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return _load_one(paths[0], verify, stack)[0]
    cells: list[Cell] = []
    for path, label in zip(paths, labels_for(paths), strict=True):
        found, _ = _load_one(path, verify, stack)
        cells += [replace(c, origin=label, rel=f"{label}:{c.rel}") for c in found]
    return assign_splits(cells)


def _difference(cell: Cell, ref: Cell) -> str:
    a, b = cell.predictions, ref.predictions
    assert a is not None and b is not None
    ages_b = dict(zip(b.paths, b.ages, strict=True))
    shared = [(p, age) for p, age in zip(a.paths, a.ages, strict=True) if p in ages_b]
    relabelled = sum(abs(age - ages_b[p]) > 1e-3 for p, age in shared)
    return (
        f"test split differs from {ref.rel}'s ({ref.origin}, the reference for {cell.dataset}): "
        f"{len(a.paths)} images here, {len(b.paths)} there, {len(shared)} paths in common"
        + (f", {relabelled} of them with other ages" if relabelled else "")
    )


def assign_splits(cells: list[Cell]) -> list[Cell]:
    """Per data set, the reference test split is the one of the first source (in the order given) that has the
    data set, its most common split there; cells on another split get their own table and a reason."""
    order = list(dict.fromkeys(c.origin for c in cells))
    keys = {
        id(c): c.predictions.split_key for c in cells if c.ok and c.predictions is not None and len(c.predictions.paths)
    }
    keyed = [c for c in cells if id(c) in keys]
    reference: dict[str, Cell] = {}
    for dataset in dict.fromkeys(c.dataset for c in keyed):
        members = [c for c in keyed if c.dataset == dataset]
        first = min(members, key=lambda c: order.index(c.origin)).origin
        mine = [c for c in members if c.origin == first]
        counts = Counter(keys[id(c)] for c in mine)
        reference[dataset] = next(c for c in mine if counts[keys[id(c)]] == max(counts.values()))
    out = []
    for cell in cells:
        ref = reference.get(cell.dataset)
        if id(cell) in keys and ref is not None and keys[id(cell)] != keys[id(ref)]:
            table = f"{cell.dataset} [test split {keys[id(cell)][:SPLIT_DIGEST_CHARS]}]"
            cell = replace(cell, split_table=table, split_note=_difference(cell, ref))
        out.append(cell)
    return out
