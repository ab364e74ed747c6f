"""Paired comparison of two models on one data set: `agebench compare RESULTS --dataset D --a MODEL --b MODEL`.

Pairs the two models' predictions.csv image by image (per seed, over the seeds both have), and prints n images,
n seeds, each MAE, the difference MAE_a - MAE_b with its bootstrap interval, and the two-sided p-value of a
paired sign-flip test (resampling subjects where predictions.csv names them). One pair, so no multiple-test
correction; the leaderboard Holm-corrects across a table's pairs. Exit 2 with one line when a data set or model
is missing or the two were tested on different images.
"""

from __future__ import annotations

import argparse
import json
import sys

from agebench.cli.leaderboard import add_stats_arguments, stats_config
from agebench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder: <dataset>/<model>/seed<k>/ below it")
    p.add_argument("--dataset", required=True, help="data set folder name under RESULTS")
    p.add_argument("--a", required=True, dest="model_a", metavar="MODEL", help="first model (delta = MAE_a - MAE_b)")
    p.add_argument("--b", required=True, dest="model_b", metavar="MODEL", help="second model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_stats_arguments(p)


def _cells(cells, dataset: str, model: str, results: str) -> list:
    datasets = sorted({c.dataset for c in cells})
    if dataset not in datasets:
        raise UserError(f"{results}: no data set {dataset!r} (found: {', '.join(datasets)})")
    models = sorted({c.model for c in cells if c.dataset == dataset})
    if model not in models:
        raise UserError(f"{results}/{dataset}: no model {model!r} (found: {', '.join(models)})")
    ok = [c for c in cells if c.dataset == dataset and c.model == model and c.ok]
    if not ok:
        raise UserError(f"{results}/{dataset}/{model}: no finished cell (every seed failed or is unreadable)")
    clean = [c for c in ok if not c.leaky]
    return clean or ok  # leaky seeds are their own leaderboard row: compare them only when there is nothing else


def run(args: argparse.Namespace) -> int:
    from agebench.report.folds import load_cells
    from agebench.report.significance import PairingError, compare

    cfg = stats_config(args)
    if args.model_a == args.model_b:
        raise UserError(f"--a and --b name the same model {args.model_a!r}")
    cells = load_cells(args.results, verify=False)
    cells_a = _cells(cells, args.dataset, args.model_a, args.results)
    cells_b = _cells(cells, args.dataset, args.model_b, args.results)
    try:
        pair = compare(args.dataset, args.model_a, cells_a, args.model_b, cells_b, cfg)
    except PairingError as err:
        raise UserError(f"cannot compare {args.model_a} and {args.model_b} on {args.dataset}: {err}") from None
    record = pair.to_dict()
    del record["p_holm"]  # one pair: nothing to correct for
    if args.json:
        print(json.dumps(record, ensure_ascii=False))
        return 0
    verdict = "significant" if pair.p_value < cfg.alpha else "not significant"
    better = args.model_a if pair.delta < 0 else args.model_b
    lines = [
        f"{args.dataset}: {args.model_a} vs {args.model_b}",
        f"  images {pair.n_images} ({pair.n_units} {pair.unit} resampled), seeds {len(pair.seeds)} "
        f"({', '.join(str(s) for s in pair.seeds)})",
        f"  MAE {args.model_a} {pair.mae_a:.3f}, {args.model_b} {pair.mae_b:.3f}",
        f"  delta (a - b) {pair.delta:+.3f} years, {cfg.level:.0%} CI [{pair.ci_low:+.3f}, {pair.ci_high:+.3f}]",
        f"  p = {pair.p_value:.4g} (two-sided): {verdict} at alpha {cfg.alpha:g}"
        + (f"; {better} has the lower MAE" if pair.p_value < cfg.alpha else ""),
        f"  method: {record['method']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
