"""Validate a manifest and print images, subjects and age range per split.

`--decode` also decodes every image and lists each unreadable, truncated, empty, too small (< 16 px) or
blank one with its manifest row. Exit status: 0 valid, 1 valid but splits leak subjects or images are bad,
2 malformed.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest CSV")
    p.add_argument("--root", default=None, help="data root the paths are relative to (default: the manifest's folder)")
    p.add_argument("--decode", action="store_true", help="decode every image and list the bad ones (exit 1 if any)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, CPUs))")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    import json

    from agebench.data.audit import audit, print_report
    from agebench.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    report = audit(args.manifest, args.root, decode=args.decode, workers=args.workers, progress=not args.json)
    if args.json:
        print(json.dumps({"manifest": str(args.manifest), "exit_code": report.exit_code, **report.to_dict()}, indent=2))
    else:
        print_report(report)
    return report.exit_code
