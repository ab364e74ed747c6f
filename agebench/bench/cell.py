"""One benchmark cell in its own process: ``python -m agebench.bench.cell CELL_DIR``.

Reads CELL_DIR/cell.json (written by the runner), trains and evaluates through :func:`agebench.train.fit`,
profiles the trained model on the training device, and writes metrics.json last, atomically: a cell whose
metrics.json exists has finished; anything else is redone (resuming from checkpoints/last.ckpt).
A numerical fault (NaN/inf loss) is recorded as ``status: failed`` with the error, never as a number.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agebench import atomic
from agebench.errors import UserError

SCHEMA_VERSION = 1
EXIT_FAILED, EXIT_BUSY = 3, 4
LOCK_HELD_ENV = "AGEBENCH_CELL_LOCK_HELD"  # set by the runner for the cell process it starts


def is_launch_rank_zero() -> bool:
    """True in the process that owns the cell's files: global rank 0 under torchrun, srun or Lightning's launcher."""
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if key in env:
            return int(env[key]) == 0
    return int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", 0)) == 0


def lock_file(cell_dir: Path) -> Path:
    """``.<name>.lock`` beside the cell folder: outside it, so resetting the folder cannot drop the lock."""
    return cell_dir.parent / f".{cell_dir.name}.lock"


def lock_cell(cell_dir: Path):
    """An exclusive lock on the cell, released when the returned file closes (or the process dies);
    None if another process holds it."""
    import fcntl

    cell_dir.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file(cell_dir), "a")  # noqa: SIM115 - kept open on purpose: the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def failed_record(spec: dict[str, Any], error: str, wall: float, resumable: bool = False) -> dict[str, Any]:
    """metrics.json of a failed cell. ``resumable``: the fault was in the input (e.g. a bad image), not in
    the training, so once it is fixed a rerun resumes from the cell's last checkpoint instead of restarting."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "failed",
        "error": error,
        "resumable": resumable,
        "model": spec["model"],
        "dataset": spec["dataset"],
        "seed": spec["seed"],
        "wall_seconds": wall,
        "config_hash": spec["config_hash"],
    }


def run_cell(cell_dir: Path, spec: dict[str, Any] | None = None) -> int:
    """Run the cell in this process (all ranks call it under DDP); ``spec`` defaults to CELL_DIR/cell.json."""

    from agebench.bench.profile import device_name, profile_model
    from agebench.bench.provenance import provenance
    from agebench.config import FitConfig, from_dict
    from agebench.train import fit

    if is_launch_rank_zero():
        cell_dir.mkdir(parents=True, exist_ok=True)
        held = os.environ.get(LOCK_HELD_ENV) == str(cell_dir.resolve())  # the runner that started us holds it
        lock = True if held else lock_cell(cell_dir)
        if lock is None:
            print(f"{cell_dir}: another process is running this cell", file=sys.stderr)
            return EXIT_BUSY
        if spec is not None:
            atomic.write_json(cell_dir / "cell.json", spec)
    if spec is None:
        spec = json.loads((cell_dir / "cell.json").read_text())
    cfg = from_dict(FitConfig, spec["fit"])
    start = time.perf_counter()
    try:
        metrics = fit(cfg, dataset_name=spec["dataset"], write_metrics=False, return_module=True)
    except (FloatingPointError, UserError) as err:
        resumable = isinstance(err, UserError)
        if is_launch_rank_zero():
            record = failed_record(spec, str(err), time.perf_counter() - start, resumable=resumable)
            atomic.write_json(cell_dir / "metrics.json", record)
        print(f"cell {spec['dataset']}/{spec['model']}/seed{spec['seed']} failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    if not metrics:  # not global rank 0: rank 0 evaluates and writes
        return 0
    module = metrics.pop("module")
    device = next(module.parameters()).device  # fit leaves it on the device it trained and evaluated on
    precision = str(cfg.trainer.get("precision", "32-true"))
    prof = spec["profile"]
    profile = profile_model(
        module,
        img_size=cfg.data.img_size,
        batch_size=prof["batch_size"] or cfg.data.eval_batch_size or cfg.data.batch_size,
        device=device,
        precision=precision,
        channels_last=prof["channels_last"],
        warmup=prof["warmup"],
        iters=prof["iters"],
        compile_mode=prof.get("compile"),
    )
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "error": None,
        **metrics,
        **profile,
        "wall_seconds": time.perf_counter() - start,
        "provenance": provenance(
            device=device_name(device),
            precision=precision,
            config_hash=spec["config_hash"],
            manifest_sha256=metrics["manifest_sha256"],
            seed=cfg.seed,
        ),
    }
    record["config_hash"] = spec["config_hash"]
    atomic.write_json(cell_dir / "metrics.json", record)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m agebench.bench.cell CELL_DIR")
    sys.exit(run_cell(Path(sys.argv[1])))
