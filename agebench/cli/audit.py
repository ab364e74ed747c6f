"""Validate a manifest and print images, subjects and age range per split.

Exit status: 0 valid, 1 valid but splits leak subjects, 2 malformed.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest CSV")
    p.add_argument("--root", default=None, help="data root the paths are relative to (default: the manifest's folder)")


def run(args: argparse.Namespace) -> int:
    from agebench.data.audit import audit, print_report

    report = audit(args.manifest, args.root)
    print_report(report)
    return report.exit_code
