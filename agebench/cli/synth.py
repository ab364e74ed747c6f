"""Generate the embedded synthetic face-age data set: procedural faces whose age cues follow a known apparent age.

Writes OUT/images/<subject>/<index>.jpg, OUT/manifest.csv (path, age, subject_id, split, apparent_age, gender,
skin_tone[, mask]) and OUT/synth.json. The same arguments always give byte-identical files. The best possible MAE is
about 0.8 * noise sigma (2.0 years at the default 2.5): the apparent age, which drives every cue, is the true age plus
Gaussian noise that no model can see.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (new, empty, or an earlier synth output)")
    p.add_argument("--n", type=int, default=5000, help="number of images (default: 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    p.add_argument(
        "--noise-sigma", type=float, default=2.5, help="sd of apparent minus true age, in years (default: 2.5)"
    )
    p.add_argument("--masks", action="store_true", help="also write age-cue region masks (bits: see data docs)")
    p.add_argument(
        "--cache-size",
        type=int,
        default=None,
        metavar="PX",
        help="also write a PX x PX uint8 cache that training reads instead of the JPEGs (as agebench prepare)",
    )
    p.add_argument(
        "--style",
        default="default",
        help="rendering and age distribution (default, chip, studio, snapshot; --list-styles describes them): "
        "make bench uses chip; two styles make a cross-dataset shift with no download",
    )
    p.add_argument(
        "--splits",
        default="7/1/2",
        help="subjects per age-sorted block of 10 dealt to train/val/test (default: 7/1/2; make bench: 4/1/5)",
    )
    p.add_argument(
        "--apparent-bias",
        action="append",
        default=[],
        metavar="COLUMN=VALUE:YEARS[@SPLITS]",
        help="draw that group's age cues YEARS older (negative: younger), by default in the test split only; "
        "repeatable; columns gender (F, M) and skin_tone (dark, medium, light), e.g. skin_tone=dark:+8",
    )
    p.add_argument("--list-styles", action="store_true", help="describe the styles and exit")
    p.add_argument("--workers", type=int, default=None, help="processes to draw with (default: CPU cores, max 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import time

    from agebench.atomic import check_writable_dir
    from agebench.data.manifest import load_manifest
    from agebench.data.synth_styles import STYLES
    from agebench.data.synthetic import generate, mae_floor, parse_apparent_bias, parse_splits, resolve_workers
    from agebench.errors import UserError

    if args.list_styles:
        for style in STYLES.values():
            print(f"{style.name:10s} {style.description}")
        return 0
    if args.out is None:
        raise UserError("--out is required (the folder to write the data set to)")
    check_writable_dir(args.out, f"--out {args.out}")
    splits = parse_splits(args.splits)
    biases = tuple(parse_apparent_bias(text) for text in args.apparent_bias)
    start = time.perf_counter()
    manifest_path = generate(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        noise_sigma=args.noise_sigma,
        masks=args.masks,
        workers=args.workers,
        progress=not args.quiet,
        cache_size=args.cache_size,
        style=args.style,
        splits=splits,
        apparent_bias=biases,
    )
    elapsed = time.perf_counter() - start
    workers = resolve_workers(args.workers, args.n)
    manifest = load_manifest(manifest_path, check_files=False)
    counts = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    subjects = len({r.subject_id for r in manifest.records})
    print(
        f"wrote {len(manifest.records)} images of {subjects} subjects ({args.size} px, style {args.style}; "
        f"train/val/test "
        f"{counts['train']}/{counts['val']}/{counts['test']}) to {manifest_path} in {elapsed:.1f} s "
        f"with {workers} worker(s)"
    )
    print(f"MAE floor: about {mae_floor(args.noise_sigma):.2f} years (apparent-age noise sigma {args.noise_sigma:g})")
    return 0
