"""Pack result cells into a bundle another lab can add to its leaderboard and check with `agebench verify`.

Each CELL is RESULTS/<dataset>/<model>/seed<k> (or a results folder: all its cells). The zip holds per cell
metrics.json, predictions*.csv, config.yaml and cell.json, never checkpoints or images, and bundle.json with
the sha256 of every file and of every predictions row. Reads result files only: no torch needed.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "cells", nargs="+", metavar="CELL", help="cell folder(s) <dataset>/<model>/seed<k>, or results folders"
    )
    p.add_argument("--out", required=True, help="the bundle to write (FILE.zip)")


def run(args: argparse.Namespace) -> int:
    from agebench.atomic import check_writable_file
    from agebench.errors import UserError
    from agebench.report import bundle

    if not args.out.lower().endswith(".zip"):
        raise UserError(f"--out {args.out}: a bundle is a .zip file")
    check_writable_file(args.out, f"--out {args.out}")
    cells = bundle.expand_cells(args.cells)
    index = bundle.write_bundle(cells, args.out)
    print(f"wrote {args.out}: {len(index['cells'])} cell(s), {len(index['sha256'])} file(s) with sha256 digests")
    return 0
