"""Build the leaderboard from a results folder (RESULTS/<dataset>/<model>/seed<k>/metrics.json).

With --out FOLDER (or --format all) it writes leaderboard.md/.csv/.json/.html and plots/*.png there and prints the
table; with --out FILE it writes that one format; with no --out, md/csv/json go to stdout. Reads result files
only: no torch needed. Exit 2 when the folder is missing or holds no result cell.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder: <dataset>/<model>/seed<k>/metrics.json below it")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["md", "csv", "json", "html", "all"],
        default=None,
        help="output format (default: from --out's suffix; a folder gets all; md to stdout without --out)",
    )
    p.add_argument("--out", default=None, help="output file or folder (default for --format all: RESULTS/leaderboard/)")
    p.add_argument(
        "--reference",
        choices=["matching", "all", "none"],
        default="matching",
        help="published rows of Maroun et al. 2025 to show: for the data sets present (default), all, none",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip recomputing each MAE from predictions.csv (faster on huge test sets)",
    )


# Terminal columns: (row.display() key, short header, minimum width); long texts wrap in narrow terminals.
TERMINAL_COLUMNS = [
    ("dataset", "data set", 7),
    ("model", "model", 8),
    ("seeds", "seeds", 6),
    ("mae", "MAE (y)", 11),
    ("cs5", "CS@5", 6),
    ("baseline", "mean MAE", 6),
    ("params", "params M", 6),
    ("latency", "lat. ms", 6),
    ("throughput", "img/s", 5),
    ("flags", "flags", 5),
]


def print_table(rows) -> None:
    """The leaderboard as a rich table on the terminal; the long "timed on" and paper source go in the caption."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from agebench.report.reference import PAPER

    devices = sorted({row.timed_on for row in rows if row.status == "ok" and row.timed_on})
    caption = (
        f"MAE: mean ± std over seeds. Latency: batch 1. Timed on: {'; '.join(devices) or 'not recorded'}. "
        f"(paper): published by {PAPER}, not measured here."
    )
    table = Table(title="agebench leaderboard", caption=caption)
    for key, header, width in TERMINAL_COLUMNS:
        numeric = key in ("cs5", "baseline", "params", "latency", "throughput")
        table.add_column(header, min_width=width, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        text = row.display()
        if row.status == "reference":
            text["model"] += " (paper)"
        style = {"failed": "red", "invalid": "red", "reference": "italic cyan"}.get(row.status)
        values = [
            escape(text[k]) if k != "flags" or not text[k] else f"[yellow]{escape(text[k])}[/]"
            for k, _, _ in TERMINAL_COLUMNS
        ]
        table.add_row(*values, style=style)
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from agebench.report import build_leaderboard

    built = build_leaderboard(args.results, out=args.out, fmt=args.fmt, reference=args.reference, verify=args.verify)
    if built.text is not None:
        sys.stdout.write(built.text)
    else:
        print_table(built.rows)
        for path in built.written:
            print(f"wrote {path}")
    for row in built.rows:
        for warning in row.warnings:
            print(f"agebench leaderboard: warning: {warning}", file=sys.stderr)
    return 0
