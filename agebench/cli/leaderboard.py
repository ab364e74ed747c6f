"""Build the leaderboard from a results folder (RESULTS/<dataset>/<model>/seed<k>/metrics.json), a result bundle
(`agebench bundle`), or several of them: a merged leaderboard whose rows name their source, where cells are pooled
and paired only with cells on the same test split (same paths and ages); the others are listed with the reason.

With --out FOLDER (or --format all) it writes leaderboard.md/.csv/.json/.html, pairwise.csv and plots/*.png there
and prints the table; with --out FILE it writes that one format; with no --out, md/csv/json go to stdout. Every
row gets a bootstrap confidence interval and a rank group from paired tests against the other rows of its data
set (see agebench.report.stats). Cells that predicted other data sets (bench ``eval_on``) add the cross-dataset
matrix (matrix.md/.csv/.json and plots/cross_matrix.png); --matrix prints only that. Reads result files only: no
torch needed. Exit 2 when the folder is missing or holds no result cell.
"""

from __future__ import annotations

import argparse
import sys

from agebench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "results",
        nargs="+",
        help="results folder(s) (<dataset>/<model>/seed<k>/metrics.json below) or bundle(s) (.zip); several: merged",
    )
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
        help="skip checking each MAE against predictions.csv (the statistics still read the files)",
    )
    p.add_argument(
        "--matrix",
        action="store_true",
        help="print (or write, as md/csv/json) only the cross-dataset matrix: per model, training sets x test sets",
    )
    add_stats_arguments(p)


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    """The statistics knobs, shared with `agebench compare`."""
    g = p.add_argument_group("statistics")
    g.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval (default 2000)")
    g.add_argument(
        "--level", type=float, default=0.95, help="confidence level; tests use alpha = 1 - level (default 0.95)"
    )
    g.add_argument(
        "--stats-seed", type=int, default=0, help="seed of every resampling (default 0): same seed, same CIs"
    )
    g.add_argument(
        "--permutations", type=int, default=9999, help="sign-flip permutations per paired test (default 9999)"
    )


def stats_config(args: argparse.Namespace):
    """A StatsConfig from the arguments; out-of-range values are the user's error (exit 2)."""
    from agebench.report.significance import StatsConfig

    if not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1 (e.g. 0.95), got {args.level}")
    if args.resamples < 100:
        raise UserError(f"--resamples must be at least 100, got {args.resamples}")
    if args.permutations < 99:
        raise UserError(f"--permutations must be at least 99, got {args.permutations}")
    return StatsConfig(args.resamples, args.level, args.stats_seed, args.permutations)


# Terminal columns: (row.display() key, short header, minimum width); long texts wrap in narrow terminals.
TERMINAL_COLUMNS = [
    ("dataset", "data set", 7),
    ("rank", "#", 2),
    ("group", "grp", 3),
    ("model", "model", 8),
    ("seeds", "seeds", 6),
    ("mae", "MAE (y)", 11),
    ("mae_ci", "MAE CI", 14),
    ("cs5", "CS@5", 6),
    ("baseline", "mean MAE", 6),
    ("params", "params M", 6),
    ("latency", "lat. ms", 6),
    ("throughput", "img/s", 5),
    ("regime", "regime", 8),
    ("flags", "flags", 5),
]


def print_table(rows, analysis=None) -> None:
    """The leaderboard as a rich table on the terminal; the long "timed on" and paper source go in the caption;
    then one line per data set on what its rank groups mean, and the pairwise comparisons."""
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
    if any(row.origin for row in rows):
        table.add_column("source", min_width=8, overflow="fold")
    for row in rows:
        text = row.display()
        if row.status == "reference":
            text["model"] += " (paper)"
        style = {"failed": "red", "invalid": "red", "reference": "italic cyan"}.get(row.status)
        values = [
            escape(text[k]) if k != "flags" or not text[k] else f"[yellow]{escape(text[k])}[/]"
            for k, _, _ in TERMINAL_COLUMNS
        ]
        if any(r.origin for r in rows):
            values.append(escape(row.origin or text["source"]))
        table.add_row(*values, style=style)
    # Piped (make bench > log) rich assumes 80 columns and crops the table's right columns: give it room.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    if analysis is not None:
        console.print(escape(analysis.legend()))
        print_comparisons(console, analysis)
    from agebench.report.tables import ablations

    for ablation in ablations(rows, analysis):
        console.print(f"[bold]ablation[/] {escape(ablation.text())}")
    from agebench.report.factors import effects

    for e in sorted(effects(rows, analysis), key=lambda e: (e.dataset, e.study, -e.spread)):
        means = ", ".join(f"{level}: {mae:.2f}" for level, mae in e.level_mae.items())
        console.print(
            f"[bold]factor[/] {escape(f'{e.dataset}/{e.study} {e.factor}: mean MAE {means}; spread {e.spread:.2f}')}"
        )


def print_comparisons(console, analysis) -> None:
    """Per data set: the groups in one line, then each pair's difference, CI and Holm-adjusted p."""
    from rich.markup import escape
    from rich.table import Table

    from agebench.report.leaderboard import format_p

    alpha, level = analysis.config.alpha, analysis.config.level
    for comp in analysis.datasets.values():
        console.print(f"[bold]{escape(comp.summary(alpha))}[/]")
        if not comp.pairs:
            continue
        table = Table(box=None, pad_edge=False)
        for header in ("a", "b", "a - b (y)", f"{level:.0%} CI", "p (Holm)", "verdict"):
            table.add_column(header)
        for p in comp.pairs:
            table.add_row(
                escape(p.a),
                escape(p.b),
                f"{p.delta:+.2f}",
                f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]",
                format_p(p.p_adjusted),
                escape(p.verdict(alpha)),
            )
        console.print(table)
    console.print(escape(analysis.friedman_note))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench.atomic import check_writable_dir, check_writable_file
    from agebench.report import build_leaderboard, home_folder, resolve_target

    config = stats_config(args)
    home = home_folder(args.results)
    if home is not None or len(args.results) > 1 or Path(args.results[0]).is_file():  # a missing one: named later
        fmt, target = resolve_target(home, args.out, args.fmt)
        name = f"--out {args.out}" if args.out else None
        if target is not None:  # before the statistics, which take the time
            (check_writable_dir if fmt == "all" else check_writable_file)(target, name)
    built = build_leaderboard(
        args.results,
        out=args.out,
        fmt=args.fmt,
        reference=args.reference,
        verify=args.verify,
        stats=config,
        matrix=args.matrix,
    )
    if built.text is not None:
        sys.stdout.write(built.text)
    elif args.matrix:
        for path in built.written:
            print(f"wrote {path}")
    else:
        print_table(built.rows, built.analysis)
        from agebench.report.assurance import terminal_line

        for record in built.assurance:  # one age-assurance line per measured row (make bench shows them)
            print(terminal_line(record))
        if built.matrices:
            from agebench.report.matrix import to_markdown

            sys.stdout.write("\n" + to_markdown(built.matrices))
        from agebench.report.tables import unpooled

        for u in unpooled(built.cells):
            print(f"not pooled: {u['cell']} -> table {u['table']}: {u['reason']}")
        for path in built.written:
            print(f"wrote {path}")
    for row in built.rows:
        for warning in row.warnings:
            print(f"agebench leaderboard: warning: {warning}", file=sys.stderr)
    return 0
