"""Predict ages of new images with a trained run: a table on screen and a CSV.

`agebench predict --run RESULTS/<dataset>/<model>/seed<k> IMAGES_OR_FOLDERS... [--out preds.csv]
[--detect mtcnn] [--tta flip]` uses the run's best checkpoint and its eval preprocessing. Without --detect
each image is taken as a ready face crop (as the run's training images were); with --detect the main face
(largest, most central) is found and aligned first. The CSV has one row per image: path, age, face_box,
n_faces, error; images that cannot be read or (with --detect) hold no face have an empty age and are listed.
"""

from __future__ import annotations

import argparse
import sys

from agebench.errors import UserError

TABLE_ROWS = 30  # more rows are in the CSV only


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="result folder RESULTS/<dataset>/<model>/seed<k>")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders (recursive)")
    p.add_argument("--out", default="preds.csv", help="CSV to write (default preds.csv)")
    p.add_argument(
        "--detect",
        default=None,
        metavar="NAME",
        help="find and align the face first: mtcnn, haar or yunet:PATH.onnx (default: images are face crops)",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="with --detect: added on each side of the face, as a fraction of its side (default 0.25); for the "
        "landmark detectors (mtcnn, yunet) the side is the aligned template's, which already has some slack, so "
        "the same margin frames a little wider than with haar",
    )
    p.add_argument("--tta", default="none", help="test-time augmentation: none (default) or flip")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: up to 4)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from rich.console import Console
    from rich.table import Table

    from agebench import predict
    from agebench.atomic import check_writable_file
    from agebench.data import faces
    from agebench.evaluate import TTA
    from agebench.validate import check_device

    if args.tta not in TTA:
        raise UserError(f"--tta {args.tta!r}: expected one of {', '.join(TTA)}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.margin is not None and not (args.detect and 0 <= args.margin <= 2):
        raise UserError(f"--margin {args.margin}: needs --detect, and 0 <= margin <= 2")
    check_writable_file(args.out, f"--out {args.out}")  # before the model loads and the images are predicted
    check_device(args.device)
    detector = faces.DetectorSpec.parse(args.detect) if args.detect else None
    paths = predict.list_images(args.images)
    loaded = predict.load(args.run)
    workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if args.workers is None else args.workers
    margin = faces.DETECTOR_MARGIN if args.margin is None else args.margin
    start = time.perf_counter()
    preds = list(
        predict.predict_images(
            loaded,
            paths,
            detector=detector,
            margin=margin,
            tta=args.tta,
            batch_size=args.batch_size,
            workers=workers,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
    )
    seconds = time.perf_counter() - start
    predict.write_csv(preds, args.out)

    console = Console()
    table = Table("path", "age", "face box", "faces", "note", title=f"{loaded.name} ({loaded.checkpoint})")
    for p in preds[:TABLE_ROWS]:
        age = "" if p.age is None else f"{p.age:.1f}"
        table.add_row(p.path, age, p.face_box, "" if p.n_faces is None else str(p.n_faces), p.error)
    console.print(table)
    if len(preds) > TABLE_ROWS:
        console.print(f"... {len(preds) - TABLE_ROWS} more rows in {args.out}")
    for p in preds:
        if p.error and p.error != "no face found":
            print(f"agebench predict: {p.path}: {p.error}; not predicted", file=sys.stderr)
    s = predict.summary(preds)
    no_face = [p.path for p in preds if p.error == "no face found"]
    if no_face:
        console.print(f"no face found in {len(no_face)} image(s), not predicted: " + ", ".join(no_face[:10]))
    console.print(
        f"{s['predicted']} of {s['images']} images predicted in {seconds:.1f} s ({s['images'] / seconds:.1f} images/s "
        f"on {args.device}, {workers} loader worker(s), tta {args.tta}); wrote {args.out}",
        highlight=False,
        soft_wrap=True,
    )
    return 0
