"""`agebench prepare`: a raw download -> OUT/manifest.csv (+ crops sidecar, crop cache) and a report.

Manifest paths are relative to the raw root (RAW), never copied: pass ``--root RAW`` to audit and training
(the report records RAW). The manifest holds labels and splits only, so its sha256 is a function of the raw
tree, the protocol and the seed; face crops go to ``manifest.crops.csv`` and, with ``--cache-size``, into
``manifest.cache.npy`` (which training reads instead of the JPEGs, so RAW is then needed for audits only).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agebench.atomic import check_writable_dir
from agebench.data import faces
from agebench.data.audit import AuditReport, build_report, duplicate_paths
from agebench.data.decode_check import check_files, counts_by_kind
from agebench.data.manifest import load_manifest, write_manifest
from agebench.data.protocols import (
    Assigned,
    ProtocolResult,
    apply_protocol,
    check_fold,
    check_protocol,
    fold_count,
    lopo_subjects,
)
from agebench.data.sources import SourceScan, default_protocol, scan
from agebench.errors import UserError

MANIFEST = "manifest.csv"
FOLDS_INDEX = "folds.json"  # written by --fold all beside the foldNN/ folders


@dataclass
class PrepareResult:
    manifest: Path
    report: dict[str, object]
    audit: AuditReport

    @property
    def leaky(self) -> bool:
        return bool(self.report["leaky"])


def _detect_chunk(task: tuple[list[str], str, float]) -> list[tuple[faces.Quad, int]]:
    paths, text, margin = task
    spec, out = faces.DetectorSpec.parse(text), []
    for p in paths:
        try:
            found = faces.detect_quad(p, spec, margin)
            out.append((found.quad, found.n_faces))
        except OSError as err:
            raise UserError(f"{p}: cannot read image ({err})") from None
    return out


def _detect_all(paths: list[str], spec: faces.DetectorSpec, margin: float, workers: int, progress: bool) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from agebench.data.cache import _init_worker

    if not paths:
        return []
    tasks = [(paths[s : s + 32], str(spec), margin) for s in range(0, len(paths), 32)]
    results: list[tuple[faces.Quad, int]] = []
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(f"faces ({spec})", total=len(paths))
        if workers <= 1:
            chunks = map(_detect_chunk, tasks)
            for chunk in chunks:
                results += chunk
                bar.advance(job, len(chunk))
        else:
            import multiprocessing as mp

            from agebench.data.images import fork_safe_opencv

            with fork_safe_opencv(), mp.get_context().Pool(workers, initializer=_init_worker) as pool:
                for chunk in pool.imap(_detect_chunk, tasks):  # ordered: results line up with paths
                    results += chunk
                    bar.advance(job, len(chunk))
    return results


def _status(show: bool, text: str):
    """A spinner while a step without a natural progress count runs."""
    from contextlib import nullcontext

    from rich.console import Console

    return Console(stderr=True).status(text) if show else nullcontext()


def _crops(
    rows: list[Assigned],
    root: Path,
    detector: faces.DetectorSpec,
    margin: float | None,
    workers: int,
    progress: bool,
    detected: dict[str, tuple[faces.Quad, int]],
) -> tuple[list[tuple[str, str, faces.Quad | None]], list[str]]:
    """(path, face, quad) per row: the protocol's box, else the data set's, else the detector's (aligned by its five
    landmarks where it gives them), else none; and the paths where the detector saw several faces (the largest and
    most central one is taken).

    ``detected`` memoises detector results (quad, faces seen) by path, so the folds of one ``--fold all`` detect
    each image once.
    """
    out: list[tuple[str, str, faces.Quad | None]] = []
    several: list[str] = []
    boxes = [a.crop if a.crop is not None else a.record.crop for a in rows]
    todo = [a.record.path for a, box in zip(rows, boxes, strict=True) if box is None and a.record.path not in detected]
    if detector.kind != "none" and todo:
        det_margin = faces.DETECTOR_MARGIN if margin is None else margin
        found = _detect_all([str(root / p) for p in todo], detector, det_margin, workers, progress)
        detected.update(zip(todo, found, strict=True))
    box_margin = faces.BBOX_MARGIN if margin is None else margin
    for a, box in zip(rows, boxes, strict=True):
        path = a.record.path
        if box is not None:
            out.append((path, "bbox", faces.expand_quad(box, box_margin)))
        elif detector.kind != "none":
            quad, n_faces = detected[path]
            out.append((path, detector.kind if n_faces else "no_face", quad))
            if n_faces > 1:
                several.append(path)
        else:
            out.append((path, "given", None))
    return out, several


def _manifest_rows(rows: list[Assigned]) -> list[dict[str, object]]:
    out = []
    for a in rows:
        r = a.record
        out.append({"path": r.path, "age": a.age, "subject_id": r.subject_id, "split": a.split, **r.extra, **a.extra})
    return out


def _clear_stale(manifest_file: Path, keep_crops: bool) -> list[str]:
    """Remove sidecars of a previous prepare into the same folder that no longer match."""
    from agebench.data.cache import CacheError, cache_files, open_cache

    removed = []
    if not keep_crops and faces.crops_file(manifest_file).is_file():
        faces.crops_file(manifest_file).unlink()
        removed.append(faces.crops_file(manifest_file).name)
    try:
        open_cache(manifest_file)
    except CacheError:
        for f in cache_files(manifest_file):
            f.unlink(missing_ok=True)
            removed.append(f.name)
    return removed


@dataclass
class _Found:
    """What every fold of one prepare shares: the scan (usable images only), bad images, identical images."""

    dataset: str
    root: Path
    scan: SourceScan
    bad: list
    dups: list
    detector: faces.DetectorSpec
    protocol: str
    workers: int
    detected: dict[str, tuple[faces.Quad, int]]


def _find(
    dataset: str,
    root: Path,
    protocol: str | None,
    target: str | None,
    face_detector: str | None,
    margin: float | None,
    workers: int | None,
    progress: bool,
    out: Path,
    fold: int | None,
) -> _Found:
    """The tree scanned, decoded and searched for identical images, once for all folds; every argument is
    checked first (protocol file, fold, output folder), so a typo is not reported after the whole tree was read."""
    if margin is not None and not 0 <= margin <= 2:
        raise UserError(f"--margin {margin}: expected 0..2 (fraction of the face box added on each side)")
    spec = protocol or default_protocol(dataset)
    check_protocol(spec, dataset, fold)
    check_writable_dir(out, f"--out {out}")
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    found: SourceScan = scan(dataset, root, target)
    if spec.partition(":")[0] == "lopo" and fold is not None:  # lopo's folds are its subjects, known from the names
        check_fold(fold, len(lopo_subjects(found)))
    detector = faces.DetectorSpec.parse(face_detector or found.default_detector)  # fails early if unusable
    # Unusable files never reach the manifest: they are listed in the report instead.
    bad = check_files([(root / r.path, r.path, 0, "") for r in found.records], workers=workers, progress=progress)
    if bad:
        dropped = {b.path for b in bad}
        found = dataclasses.replace(found, records=[r for r in found.records if r.path not in dropped])
        if not found.records:
            raise UserError(f"{root}: none of the {len(bad)} images found decodes ({counts_by_kind(bad)})")
    with _status(progress, f"looking for identical images among {len(found.records)} files"):
        dups = duplicate_paths(root, [r.path for r in found.records], workers)
    return _Found(dataset, root, found, bad, dups, detector, spec, workers, {})


def prepare(
    dataset: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    protocol: str | None = None,
    seed: int = 0,
    fold: int = 0,
    target: str | None = None,
    cache_size: int | None = None,
    face_detector: str | None = None,
    margin: float | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Import, split, crop, audit, cache and report; returns the manifest path and the report dict.

    ``protocol`` None is the data set's default (``official`` where it ships a split, else subject-exclusive).
    """
    found = _find(dataset, Path(root), protocol, target, face_detector, margin, workers, progress, Path(out), fold)
    return _prepare_fold(found, Path(out), seed, fold, cache_size, margin, progress)


def prepare_folds(
    dataset: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    protocol: str | None = None,
    seed: int = 0,
    target: str | None = None,
    cache_size: int | None = None,
    face_detector: str | None = None,
    margin: float | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[PrepareResult]:
    """``--fold all``: every fold of the protocol into ``OUT/foldNN/`` (the same files as one fold) + folds.json.

    The scan, decode check, duplicate search and face detection run once for all folds; a crop cache is
    built once and linked into the folds whose image list and crops are the same (all LOPO folds).
    """
    found = _find(dataset, Path(root), protocol, target, face_detector, margin, workers, progress, Path(out), None)
    n = fold_count(found.protocol, found.scan)
    width = max(2, len(str(n - 1)))
    out = Path(out)
    results: list[PrepareResult] = []
    for k in range(n):
        reuse = results[-1].manifest if results else None
        results.append(_prepare_fold(found, out / f"fold{k:0{width}d}", seed, k, cache_size, margin, progress, reuse))
    index = {
        "dataset": dataset,
        "protocol": found.protocol,
        "seed": results[0].report["seed"],
        "n_folds": n,
        "folds": [
            {
                "fold": k,
                "dir": r.manifest.parent.name,
                "manifest": f"{r.manifest.parent.name}/{r.manifest.name}",
                "manifest_sha256": r.report["manifest_sha256"],
                "test_subjects": r.report["protocol_info"].get("test_subject"),
                "images": {s["split"]: s["images"] for s in r.report["splits"]},
                "leaky": r.leaky,
            }
            for k, r in enumerate(results)
        ],
    }
    (out / FOLDS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return results


def _prepare_fold(
    found: _Found,
    out: Path,
    seed: int,
    fold: int,
    cache_size: int | None,
    margin: float | None,
    progress: bool,
    reuse_cache_of: Path | None = None,
) -> PrepareResult:
    import cv2

    from agebench import __version__
    from agebench.data.cache import build_cache, link_cache

    root, protocol, detector, workers = found.root, found.protocol, found.detector, found.workers
    linked = [p for _, p in found.dups]
    result: ProtocolResult = apply_protocol(protocol, found.scan, seed=seed, fold=fold, linked=linked)
    crops, several = _crops(result.rows, root, detector, margin, workers, progress, found.detected)
    manifest_file = write_manifest(_manifest_rows(result.rows), out / MANIFEST)
    has_crops = any(q is not None for _, _, q in crops)
    if has_crops:
        faces.write_crops(crops, faces.crops_file(manifest_file))
    removed = _clear_stale(manifest_file, keep_crops=has_crops)
    manifest = load_manifest(manifest_file, root, required_splits=())
    audit = build_report(manifest, found.dups)
    cache = None
    if cache_size:
        cache = link_cache(reuse_cache_of, manifest) if reuse_cache_of else None
        cache = cache or build_cache(manifest, size=cache_size, workers=workers, progress=progress)
    face_counts = Counter(f for _, f, _ in crops)
    imported = result.name in ("cvpr24", "coral", "official")
    bad = found.bad
    report: dict[str, object] = {
        "agebench_version": __version__,
        "dataset": found.dataset,
        "data_root": str(root.resolve()),
        "paths_relative_to": "data_root (pass --root DATA_ROOT to audit and training)",
        "manifest": MANIFEST,
        "manifest_sha256": manifest.sha256(),
        "protocol": protocol,
        "protocol_name": result.name,
        "seed": None if imported else seed,
        "fold": fold if result.name not in ("coral", "official") else None,
        "n_folds": result.info.get("n_folds", 1),
        "protocol_info": result.info,
        "grouped_by": result.grouped_by,
        "subject_exclusive": found.scan.has_identities and not audit.leaking_subjects and not result.conflicts,
        "identity_note": found.scan.identity_note,
        "source_notes": found.scan.notes,
        "leaky": audit.leaky or bool(result.conflicts),
        "protocol_conflicts": result.conflicts,
        "counts": {
            "images_found": len(found.scan.records) + len(bad),
            "bad_images": len(bad),
            "images_in_manifest": len(manifest.records),
            "subjects_in_manifest": len({r.subject_id for r in manifest.records if r.subject_id}) or None,
            "malformed_names": len(found.scan.malformed),
            "skipped_files": len(found.scan.skipped),
            "no_face": face_counts.get("no_face", 0),
            "several_faces": len(several),
        },
        "splits": audit.summary,
        "malformed_names": found.scan.malformed,
        "skipped_files": found.scan.skipped,
        "bad_images": [{"path": b.path, "kind": b.kind, "detail": b.detail} for b in bad],
        "bad_image_counts": counts_by_kind(bad),
        "faces": {
            "detector": str(detector),
            "opencv": cv2.__version__,
            "margin": margin,
            "aligned": detector.gives_landmarks,  # crops put the five landmarks on the ArcFace template
            "crops_file": faces.crops_file(manifest_file).name if has_crops else None,
            "counts": dict(sorted(face_counts.items())),
            "no_face": [p for p, f, _ in crops if f == "no_face"],
            "no_face_policy": "kept with the image's centre square as crop, flagged no_face in the crops file",
            "several_faces": several,
            "several_faces_policy": "the largest and most central face is taken",
            "found": face_counts.get(detector.kind, 0),
        },
        "cache": None if cache is None else {"file": cache.file.name, "size": cache.size, "count": len(cache)},
        "removed_stale_files": removed,
        "audit": audit.to_dict(),
    }
    write_reports(report, out)
    return PrepareResult(manifest_file, report, audit)


def _listing(items: list[str], limit: int = 200) -> list[str]:
    lines = [f"- `{i}`" for i in items[:limit]]
    if len(items) > limit:
        lines.append(f"- ... and {len(items) - limit} more (all in report.json)")
    return lines


def render_markdown(report: dict) -> str:
    """report.md: what a person checks before trusting the manifest."""
    c, f = report["counts"], report["faces"]
    leak, info = report["audit"], report["protocol_info"]
    notes = {k: v for k, v in report.get("source_notes", {}).items() if not isinstance(v, (list, dict))}
    lines = [
        f"# prepare report: {report['dataset']}",
        "",
        f"- data root: `{report['data_root']}` (manifest paths are relative to it; pass `--root` to audit/training)",
        f"- manifest: `{report['manifest']}`  sha256 `{report['manifest_sha256']}`",
        f"- protocol: `{report['protocol']}`  seed {report['seed']}  fold {report['fold']} of {report['n_folds']}"
        + (f" (test subject {info['test_subject']})" if "test_subject" in info else ""),
        f"- splits keep together: {report['grouped_by']}",
        f"- subject_exclusive: **{str(report['subject_exclusive']).lower()}**"
        + ("" if report["subject_exclusive"] else " (these splits are not subject-exclusive)")
        + f"; {report['identity_note']}",
        f"- leaky: **{str(report['leaky']).lower()}** ({leak['subject_leaks']} subject leak(s), "
        f"{leak['duplicate_image_leaks']} duplicate-image leak(s), {len(report['protocol_conflicts'])} image(s) "
        "listed in several splits by the protocol)",
        f"- images found {c['images_found']}, in manifest {c['images_in_manifest']}, "
        f"subjects {c['subjects_in_manifest'] or '-'}, unusable (left out) {c.get('bad_images', 0)}",
        f"- faces: detector `{f['detector']}` (OpenCV {f['opencv']}"
        + (", aligned by 5 landmarks" if f.get("aligned") else "")
        + f"), {f['counts']}; found: {f.get('found', 0)}, no face found: {c['no_face']}, "
        f"several found: {c.get('several_faces', 0)}",
        f"- cache: {report['cache'] or 'none'}",
        *([f"- data set notes: {'; '.join(f'{k}: {v}' for k, v in notes.items())}"] if notes else []),
        "",
        "| split | images | subjects | age range | mean age |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in report["splits"]:
        lines.append(
            f"| {s['split']} | {s['images']} | {s['subjects'] or '-'} | {s['age_min']:g}-{s['age_max']:g} "
            f"| {s['age_mean']:.1f} |"
        )
    hist = leak["age_histograms"]
    if hist:
        decades = [d for d in next(iter(hist.values())) if any(h[d] for h in hist.values())]
        lines += ["", "| split | " + " | ".join(decades) + " |", "|---|" + "---:|" * len(decades)]
        lines += [f"| {s} | " + " | ".join(str(h[d]) for d in decades) + " |" for s, h in hist.items()]
    sections = [
        ("Malformed names (kept)", [f"{m['path']}: {m['reason']}" for m in report["malformed_names"]]),
        ("Skipped files", [f"{m['path']}: {m['reason']}" for m in report["skipped_files"]]),
        (
            "Unusable images (left out)",
            [f"{b['path']}: {b['kind']} ({b['detail']})" for b in report.get("bad_images", [])],
        ),
        ("No face found (kept, centre square)", f["no_face"]),
        ("Several faces found (the largest and most central taken)", f.get("several_faces", [])),
        ("Leaking subjects", [f"{k} ({'/'.join(v)})" for k, v in leak["leaking_subjects"].items()]),
        (
            "Identical images in several splits",
            [" = ".join(d["paths"]) for d in leak["duplicate_groups"] if len(d["splits"]) > 1],
        ),
        (
            "Listed in several splits by the protocol",
            [f"{x['path']} ({x['splits']})" for x in report["protocol_conflicts"]],
        ),
    ]
    for title, items in sections:
        if items:
            lines += ["", f"## {title} ({len(items)})", "", *_listing(items)]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
