"""Train every model on every data set (one process per cell) and write RESULTS/<dataset>/<model>/seed<k>/.

Finished cells are skipped on a rerun (unless --force); an interrupted cell resumes from its last checkpoint.
Overrides use dotted keys: `agebench bench --config experiments/bench.yaml trainer.max_epochs=2 seeds=[0,1]`.
`--cell K` runs one cell in this process, for launchers that start every rank themselves:
`torchrun --nproc-per-node 4 -m agebench bench --config X --cell K` or an sbatch array (experiments/cluster/);
`--cell K --prepare` resets a failed or stale cell once, before a launcher starts the ranks.
Exit status: 0 all cells ok, 1 some cell failed, 2 bad config.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="bench YAML (see experiments/bench.yaml)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--force", action="store_true", help="rerun finished cells too")
    p.add_argument("--list", action="store_true", help="list the cells with their index and state, run nothing")
    p.add_argument(
        "--cell",
        default=None,
        metavar="INDEX|KEY",
        help="run only this cell, in this process (for torchrun / srun, which start every rank)",
    )
    p.add_argument(
        "--prepare",
        action="store_true",
        help="with --cell: only reset a failed or stale cell (once, before a launcher starts the ranks)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. trainer.max_epochs=2")


def run(args: argparse.Namespace) -> int:
    from agebench.atomic import check_writable_dir
    from agebench.bench.runner import list_cells, run_bench, run_one_cell
    from agebench.errors import UserError

    if args.list:
        return list_cells(args.config, args.out, args.overrides)
    check_writable_dir(args.out, f"--out {args.out}")
    if args.prepare and args.cell is None:
        raise UserError("--prepare needs --cell")
    if args.cell is not None:
        return run_one_cell(args.config, args.out, args.cell, args.overrides, prepare=args.prepare)
    return run_bench(args.config, args.out, force=args.force, overrides=args.overrides)
