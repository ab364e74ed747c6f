"""Train one model on one data set from a YAML config, then evaluate the best checkpoint on the whole test split.

Writes OUT_DIR/config.yaml (resolved), checkpoints/best.ckpt, predictions.csv and metrics.json.
Overrides use dotted keys: `agebench fit --config experiments/fit/synth_small.yaml trainer.max_epochs=2`.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML config (see experiments/fit/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. data.batch_size=32")


def run(args: argparse.Namespace) -> int:
    from agebench.config import load_fit_config
    from agebench.train import fit

    metrics = fit(load_fit_config(args.config, args.overrides))
    if metrics:
        keys = ("model", "dataset", "n_test", "mae", "rmse", "cs5", "best_val_mae")
        print(json.dumps({k: metrics.get(k) for k in keys}, indent=2))
    return 0
