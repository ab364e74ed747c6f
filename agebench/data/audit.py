"""`agebench audit`: validate a manifest and summarise it, so a leak is seen before anyone trains on it.

Two kinds of leak make a manifest leaky (exit 1): a subject in more than one split, and the same image bytes
(sha256) under paths in different splits; re-uploaded or copied pictures are common in scraped data sets.
Only files that share their size with another file are hashed, so auditing a large set stays cheap.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agebench.data.decode_check import BadImage, check_manifest_images, counts_by_kind
from agebench.data.manifest import SPLITS, Manifest, load_manifest, split_summary

EXIT_OK, EXIT_LEAKY, EXIT_BAD_IMAGES = 0, 1, 1
DECADES = tuple(f"{d}-{d + 9}" for d in range(0, 100, 10)) + ("100+",)


@dataclass
class DuplicateGroup:
    """Paths holding identical bytes; a leak when they sit in more than one split."""

    sha256: str
    paths: list[str]
    splits: list[str]

    @property
    def cross_split(self) -> bool:
        return len(self.splits) > 1


@dataclass
class AuditReport:
    manifest: Manifest
    summary: list[dict[str, object]]
    leaking_subjects: dict[str, list[str]]
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    histograms: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates_checked: bool = False
    bad_images: list[BadImage] | None = None  # None: images not decoded (audit without --decode)

    @property
    def leaking_duplicates(self) -> list[DuplicateGroup]:
        return [d for d in self.duplicates if d.cross_split]

    @property
    def leaky(self) -> bool:
        return bool(self.leaking_subjects) or bool(self.leaking_duplicates)

    @property
    def exit_code(self) -> int:
        if self.bad_images:
            return EXIT_BAD_IMAGES
        return EXIT_LEAKY if self.leaky else EXIT_OK

    def to_dict(self) -> dict[str, object]:
        """JSON-able facts (prepare's report embeds them)."""
        return {
            "leaky": self.leaky,
            "subject_leaks": len(self.leaking_subjects),
            "leaking_subjects": self.leaking_subjects,
            "duplicates_checked": self.duplicates_checked,
            "duplicate_image_leaks": len(self.leaking_duplicates),
            "duplicate_groups": [{"sha256": d.sha256, "paths": d.paths, "splits": d.splits} for d in self.duplicates],
            "age_histograms": self.histograms,
            "images_decoded": self.bad_images is not None,
            "bad_images": [b.to_dict() for b in self.bad_images or []],
            "bad_image_counts": counts_by_kind(self.bad_images or []),
        }


def decade(age: float) -> str:
    return DECADES[min(int(age // 10), len(DECADES) - 1)]


def age_histograms(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Images per age decade per split (splits in train/val/test order, every decade present)."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        recs = manifest.split(split)
        if recs:
            counts = dict.fromkeys(DECADES, 0)
            for r in recs:
                counts[decade(r.age)] += 1
            out[split] = counts
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def duplicate_paths(root: Path, paths: list[str], workers: int = 8) -> list[tuple[str, list[str]]]:
    """(sha256, sorted paths) for every set of files under root with identical bytes, sorted by first path."""
    by_size: dict[int, list[str]] = defaultdict(list)
    for p in paths:
        try:
            by_size[os.path.getsize(root / p)].append(p)
        except OSError:  # a missing file has no duplicate; `audit --decode` reports it
            continue
    candidates = [p for group in by_size.values() if len(group) > 1 for p in group]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashes = list(pool.map(lambda p: _sha256(root / p), candidates))
    by_hash: dict[str, list[str]] = defaultdict(list)
    for p, h in zip(candidates, hashes, strict=True):
        by_hash[h].append(p)
    return sorted(((h, sorted(ps)) for h, ps in by_hash.items() if len(ps) > 1), key=lambda g: g[1][0])


def find_duplicates(manifest: Manifest, workers: int = 8) -> list[DuplicateGroup]:
    """Groups of manifest images with identical bytes, with the splits they sit in."""
    return _groups(manifest, duplicate_paths(manifest.root, [r.path for r in manifest.records], workers))


def _groups(manifest: Manifest, found: list[tuple[str, list[str]]]) -> list[DuplicateGroup]:
    split_of = {r.path: r.split for r in manifest.records}
    groups = []
    for h, paths in found:
        paths = [p for p in paths if p in split_of]
        if len(paths) > 1:
            groups.append(DuplicateGroup(h, paths, sorted({split_of[p] for p in paths}, key=SPLITS.index)))
    return groups


def build_report(manifest: Manifest, duplicates: list[tuple[str, list[str]]] | None) -> AuditReport:
    """The report of a loaded manifest; ``duplicates`` from duplicate_paths, or None when not checked."""
    return AuditReport(
        manifest,
        split_summary(manifest),
        manifest.leaks(),
        duplicates=_groups(manifest, duplicates or []),
        histograms=age_histograms(manifest),
        duplicates_checked=duplicates is not None,
    )


def audit(
    file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    check_duplicates: bool = True,
    decode: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> AuditReport:
    """Validate (raises ManifestError when malformed) and collect the facts a user should see.

    ``decode=True`` also decodes every image (see :mod:`agebench.data.decode_check`); missing files are
    then reported per row instead of stopping the duplicate check.
    """
    manifest = load_manifest(file, root)
    bad = check_manifest_images(manifest, workers=workers, progress=progress) if decode else None
    unreadable = {b.path for b in bad or [] if b.kind in ("missing", "unreadable")}
    paths = [r.path for r in manifest.records if r.path not in unreadable]
    report = build_report(manifest, duplicate_paths(manifest.root, paths) if check_duplicates else None)
    report.bad_images = bad
    return report


def _shown(items: list[str], limit: int = 50) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def print_report(report: AuditReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = report.manifest
    table = Table(title=f"{Path(m.file)}  (root {m.root})")
    for col in ("split", "images", "subjects", "age range", "mean age"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for row in report.summary:
        subjects = "-" if row["subjects"] is None else str(row["subjects"])
        table.add_row(
            str(row["split"]),
            str(row["images"]),
            subjects,
            f"{row['age_min']:g}-{row['age_max']:g}",
            f"{row['age_mean']:.1f}",
        )
    console.print(table)
    if report.histograms:
        used = [d for d in DECADES if any(h[d] for h in report.histograms.values())]
        hist = Table(title="images per age decade")
        hist.add_column("split")
        for d in used:
            hist.add_column(d, justify="right")
        for split, counts in report.histograms.items():
            hist.add_row(split, *(str(counts[d]) for d in used))
        console.print(hist)
    if not m.has_identities:
        console.print("no subject identities: splits cannot be checked for identity leaks (not subject-exclusive)")
    if report.leaking_subjects:
        n = len(report.leaking_subjects)
        shown = _shown([f"{s} ({'/'.join(sp)})" for s, sp in report.leaking_subjects.items()])
        console.print(f"[bold red]LEAK[/]: {n} subject(s) appear in more than one split: {shown}")
    leaking = report.leaking_duplicates
    if leaking:
        console.print(f"[bold red]LEAK[/]: {len(leaking)} image(s) appear with identical bytes in more than one split:")
        for d in leaking[:50]:
            console.print(f"  {' = '.join(d.paths)}  ({'/'.join(d.splits)})", highlight=False)
        if len(leaking) > 50:
            console.print(f"  ... and {len(leaking) - 50} more")
    same_split = len(report.duplicates) - len(leaking)
    if same_split:
        console.print(f"note: {same_split} group(s) of identical images within one split (not a leak)")
    if not report.duplicates_checked:
        console.print("duplicate images: not checked")
    if report.bad_images:
        counts = ", ".join(f"{n} {kind}" for kind, n in counts_by_kind(report.bad_images).items())
        console.print(f"[bold red]BAD IMAGES[/]: {len(report.bad_images)} of {len(m.records)} ({counts}):")
        for b in report.bad_images[:200]:
            console.print(f"  {b.line()}", highlight=False, markup=False)
        if len(report.bad_images) > 200:
            console.print(f"  ... and {len(report.bad_images) - 200} more (--json lists all)")
    elif report.bad_images is not None:
        console.print(f"images: all {len(m.records)} decode")
    if not report.leaky and not report.bad_images:
        console.print("[green]valid[/]: splits are subject-exclusive" if m.has_identities else "[green]valid[/]")
