"""Check a result bundle (or a results or cell folder): digests, schema version, every number its predictions
determine, and with --manifest that the predictions cover exactly the receiver's test split with the same ages.

Prints one line per mismatch and exits 1 on any, else 0 (2: bad arguments). Latency, throughput and GFLOPs cannot
be recomputed from files: they are listed as claimed. Reads result files only: no torch needed.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", metavar="BUNDLE", help="a bundle (FILE.zip or its unpacked folder), a results or cell folder"
    )
    p.add_argument("--manifest", default=None, help="your manifest of the data set: check the test split's coverage")
    p.add_argument("--root", default=None, help="the manifest's data root: also check its test images exist there")
    p.add_argument("--dataset", default=None, help="the data set the manifest is for, when the bundle holds several")
    p.add_argument("-q", "--quiet", action="store_true", help="print the mismatches and the verdict only")


def run(args: argparse.Namespace) -> int:
    from agebench.report.verify import verify

    report = verify(args.target, args.manifest, args.root, args.dataset)
    if not args.quiet:
        for note in report.notes:
            print(f"note: {note}")
    for line in report.mismatches:
        print(f"MISMATCH {line}")
    if report.mismatches:
        print(f"agebench verify: {len(report.mismatches)} mismatch(es) in {args.target}", file=sys.stderr)
        return 1
    checked = f"{report.digests} file digests, " if report.digests else ""
    print(f"verified {args.target}: {report.cells} cell(s); {checked}schema and recomputed metrics agree", end="")
    print(f"; test split of {args.manifest} covered exactly" if args.manifest else "")
    return 0
