"""Turn a raw data set download into OUT/manifest.csv, OUT/report.json and OUT/report.md (+ crops, cache).

Manifest paths are relative to RAW: pass `--root RAW` to `agebench audit` and to training.
Protocols: subject-exclusive (default; seeded, age-stratified, 5 folds: fold K test, K+1 val, the rest
train), random (per image, ignores identities), cvpr24:PATH.json (Paplham & Franc's database JSON, split K),
coral:DIR (coral-cnn's <name>_train/_valid/_test.csv). Imported leaks are reported, not refused.
"""

from __future__ import annotations

import argparse

DATASETS = ("utkface", "afad", "cacd", "morph2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=DATASETS, help="which raw data set RAW holds")
    p.add_argument("--root", required=True, metavar="RAW", help="folder of the raw download")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (manifest, reports, crops, cache)")
    p.add_argument(
        "--protocol",
        default="subject-exclusive",
        metavar="P",
        help="subject-exclusive (default), random, cvpr24:PATH.json or coral:DIR",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of our protocols (default 0)")
    p.add_argument("--fold", type=int, default=0, metavar="K", help="fold / split 0-4 (default 0)")
    p.add_argument(
        "--cache-size",
        type=int,
        default=None,
        metavar="PX",
        help="also write a PX x PX uint8 crop cache that training reads instead of JPEGs",
    )
    p.add_argument(
        "--face-detector",
        default=None,
        metavar="D",
        help="none, haar, mtcnn (5-point alignment; pip install 'agebench[faces]') or yunet:PATH.onnx "
        "(default: none for utkface/afad, haar for cacd/morph2); a protocol's boxes (cvpr24 aligned_bbox) take "
        "precedence",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        metavar="M",
        help="added on each side, as a fraction of the face box or aligned template square (default 0.25 "
        "detector, 0 for boxes)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes for detection and caching")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agebench.data.prepare import prepare

    result = prepare(
        args.dataset,
        args.root,
        args.out,
        protocol=args.protocol,
        seed=args.seed,
        fold=args.fold,
        cache_size=args.cache_size,
        face_detector=args.face_detector,
        margin=args.margin,
        workers=args.workers,
    )
    r = result.report
    console = Console()
    counts = r["counts"]
    subjects = counts["subjects_in_manifest"] or "no"
    console.print(f"{counts['images_in_manifest']} images ({subjects} subjects) -> {result.manifest}", soft_wrap=True)
    console.print(f"  manifest sha256 {r['manifest_sha256']}", soft_wrap=True, highlight=False)
    for s in r["splits"]:
        console.print(f"  {s['split']:5s} {s['images']:7d} images, ages {s['age_min']:g}-{s['age_max']:g}")
    notes = []
    if counts["malformed_names"]:
        notes.append(f"{counts['malformed_names']} malformed name(s) kept")
    if counts["skipped_files"]:
        notes.append(f"{counts['skipped_files']} file(s) skipped")
    if counts.get("bad_images"):
        notes.append(f"{counts['bad_images']} unusable image(s) left out")
    if counts["no_face"]:
        notes.append(f"{counts['no_face']} image(s) without a detected face (centre crop)")
    if counts.get("several_faces"):
        notes.append(f"{counts['several_faces']} image(s) with several faces (largest and most central taken)")
    if notes:
        console.print("  " + "; ".join(notes) + " (see report.md)")
    if not r["subject_exclusive"]:
        console.print(f"  [yellow]not subject-exclusive[/]: {r['identity_note']}")
    if r["faces"]["crops_file"] and not r["cache"]:
        console.print(
            f"  note: face crops are in {r['faces']['crops_file']}; training applies them only through the cache "
            "(add --cache-size PX), otherwise it reads whole images"
        )
    if r["leaky"]:
        console.print("  [bold red]LEAKY[/]: splits share subjects or images (recorded as leaky: true; see report.md)")
    console.print(f"audit with: agebench audit {result.manifest} --root {args.root}", highlight=False, soft_wrap=True)
    return 0
