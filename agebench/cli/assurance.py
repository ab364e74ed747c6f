"""Age assurance of finished runs: `agebench assurance RESULTS [--dataset D] [--model M] [--thresholds 13,16,18,21,25]
[--buffer B] [--compare MODEL] [--json]`.

Per leaderboard row (data set x model, seeds pooled): MAE, bias and CS@5 per value of each demographic column of
predictions.csv (gender, race, skin_tone) with subject-cluster bootstrap intervals, the group MAE gap and pairwise
group tests (Holm-corrected); MAE and bias by year of age; at each threshold T the share of true ages [T-5, T)
estimated >= T + B (fpr, per year too) and of [T, T+10) estimated below (fnr); Challenge-25; the [13, 17) child
band. --compare adds paired differences between each row and that model's row on the same data set. --json:
one object per row. Reads result files only; exit 2 with one line on a bad option or an unknown data set/model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from agebench.cli.leaderboard import add_stats_arguments, stats_config
from agebench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder: <dataset>/<model>/seed<k>/ below it")
    p.add_argument("--dataset", help="only this data set (folder name under RESULTS)")
    p.add_argument("--model", help="only this model")
    p.add_argument(
        "--thresholds", default="13,16,18,21,25", help="age gates T, comma-separated, 1-100 (default 13,16,18,21,25)"
    )
    p.add_argument("--buffer", type=float, default=0.0, help="buffer B >= 0: a face passes at estimate >= T + B")
    p.add_argument("--compare", metavar="MODEL", help="paired differences of each row against MODEL's row")
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of text")
    add_stats_arguments(p)


def parse_thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--thresholds {text!r}: expected numbers separated by commas, e.g. 13,16,18") from None
    if not values:
        raise UserError(f"--thresholds {text!r}: give at least one threshold")
    bad = [t for t in values if not (math.isfinite(t) and 1 <= t <= 100)]
    if bad:
        raise UserError(f"--thresholds {text!r}: {bad[0]:g} is outside 1-100 years")
    return values


def run(args: argparse.Namespace) -> int:
    from agebench.report import assurance
    from agebench.report.assurance_stats import Boot
    from agebench.report.folds import load_cells
    from agebench.report.leaderboard import build_rows

    cfg = stats_config(args)
    thresholds = parse_thresholds(args.thresholds)
    if not (math.isfinite(args.buffer) and args.buffer >= 0):
        raise UserError(f"--buffer {args.buffer:g}: must be a number >= 0 (years above the threshold)")
    cells = load_cells(args.results, verify=False)
    if not cells:
        raise UserError(f"{args.results}: no result cell (<dataset>/<model>/seed<k>/metrics.json)")
    rows = [r for r in build_rows(cells, reference="none") if r.status == "ok" and r.cells]
    datasets = sorted({r.dataset for r in rows})
    if args.dataset is not None and args.dataset not in datasets:
        raise UserError(f"{args.results}: no finished data set {args.dataset!r} (found: {', '.join(datasets)})")
    pool = [r for r in rows if args.dataset in (None, r.dataset)]
    models = sorted({r.model for r in pool})
    for name, flag in ((args.model, "--model"), (args.compare, "--compare")):
        if name is not None and name not in models:
            raise UserError(f"{flag} {name!r}: no finished row (found: {', '.join(models)})")
    chosen = [r for r in pool if args.model in (None, r.model)]
    settings = assurance.Settings(thresholds, args.buffer, Boot(cfg.n_resamples, cfg.level, cfg.seed))
    for row in chosen:
        record = assurance.assess_row(row, settings)
        if args.compare and row.model != args.compare:
            other = next((r for r in pool if r.dataset == row.dataset and r.model == args.compare), None)
            record["compare"] = assurance.compare_rows(row, other, settings) if other else None
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
            continue
        lines = assurance.detail_markdown(record)
        if record.get("compare"):
            lines += assurance.compare_markdown(record["compare"])
        sys.stdout.write("\n".join(lines) + "\n")
    return 0
