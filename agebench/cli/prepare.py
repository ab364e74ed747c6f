"""Turn a raw data set download into OUT/manifest.csv, OUT/report.json and OUT/report.md (+ crops, cache).

Manifest paths are relative to RAW: pass `--root RAW` to `agebench audit` and to training.
Protocols: subject-exclusive (default; seeded, age-stratified, 5 folds: fold K test, K+1 val, the rest
train), random (per image, ignores identities), lopo (leave one person out: fold K tests the K-th subject),
official (the split a data set ships: appa-real, clap2016, imdb-clean, where it is the default),
cvpr24:PATH.json (Paplham & Franc's database JSON, split K), coral:DIR (coral-cnn's <name>_train/_valid/_test.csv).
Imported leaks are reported, not refused. `--fold all` writes every fold into OUT/foldNN/ plus OUT/folds.json.
"""

from __future__ import annotations

import argparse

from agebench.data.sources import DATASETS


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fold number or 'all'") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=DATASETS, help="which raw data set RAW holds")
    p.add_argument("--root", required=True, metavar="RAW", help="folder of the raw download")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (manifest, reports, crops, cache)")
    p.add_argument(
        "--protocol",
        default=None,
        metavar="P",
        help="subject-exclusive, random, lopo, official, cvpr24:PATH.json or coral:DIR "
        "(default: official for appa-real, clap2016, imdb-clean; subject-exclusive otherwise)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of our protocols (default 0)")
    p.add_argument(
        "--fold",
        type=_fold,
        default=0,
        metavar="K",
        help="fold / split (0-4; lopo: 0 to subjects-1; default 0), or 'all': every fold into OUT/foldNN/",
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="T",
        help="the age label where a set has several: apparent (default) or real (appa-real; clap2016: apparent)",
    )
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
        help="none, haar, mtcnn (5-point alignment; pip install 'agebench[faces]') or yunet:PATH.onnx (default: "
        "the data set card's; none for pre-cropped sets); boxes from a protocol (cvpr24 aligned_bbox) or the data "
        "set (imdb-clean CSV) take precedence",
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

    from agebench.data.prepare import FOLDS_INDEX, prepare, prepare_folds

    options = {
        "protocol": args.protocol,
        "seed": args.seed,
        "target": args.target,
        "cache_size": args.cache_size,
        "face_detector": args.face_detector,
        "margin": args.margin,
        "workers": args.workers,
    }
    console = Console()
    if args.fold == "all":
        results = prepare_folds(args.dataset, args.root, args.out, **options)
        for result in results:
            _print(console, result, args.root)
        console.print(f"{len(results)} folds -> {args.out}/{FOLDS_INDEX}", highlight=False, soft_wrap=True)
        return 0
    _print(console, prepare(args.dataset, args.root, args.out, fold=args.fold, **options), args.root)
    return 0


def _print(console, result, root: str) -> None:
    r = result.report
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
    console.print(f"audit with: agebench audit {result.manifest} --root {root}", highlight=False, soft_wrap=True)
