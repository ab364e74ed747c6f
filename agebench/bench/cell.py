"""One benchmark cell in its own process: ``python -m agebench.bench.cell CELL_DIR``.

Reads CELL_DIR/cell.json (written by the runner), trains and evaluates through :func:`agebench.train.fit`,
profiles the trained model on the training device, and writes metrics.json last, atomically: a cell whose
metrics.json exists has finished; anything else is redone (resuming from checkpoints/last.ckpt).
A numerical fault (NaN/inf loss) is recorded as ``status: failed`` with the error, never as a number.
Cross-dataset targets (cell.json ``cross``) are predicted after training; a finished cell that lacks one (or
whose target manifest changed) only loads its best checkpoint and predicts what is missing.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agebench import atomic
from agebench.bench.targets import target_settings_hash
from agebench.errors import UserError
from agebench.launch import is_launch_rank_zero

SCHEMA_VERSION = 1
EXIT_FAILED, EXIT_BUSY = 3, 4
LOCK_HELD_ENV = "AGEBENCH_CELL_LOCK_HELD"  # set by the runner for the cell process it starts


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
        **({"fold": spec["fold"]} if spec.get("fold") else {}),
        **({"factors": spec["factors"], "variant_of": spec["variant_of"]} if spec.get("factors") else {}),
    }


def finished_record(cell_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """metrics.json of a cell that finished ok under ``config_hash``, else None."""
    try:
        record = json.loads((cell_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and record.get("status") == "ok" and record.get("config_hash") == config_hash
    return record if ok else None


def missing_targets(spec: dict[str, Any], record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cross targets of ``spec`` that ``record`` lacks, or holds for another version of the target manifest
    or other target settings (root, image size, crop, cache)."""
    done = record.get("cross") or {}
    missing = {}
    for name, data in (spec.get("cross") or {}).items():
        old = done.get(name) or {}
        # Keyed on the target test split's content (agebench 0.6): a new column in its manifest keeps it done.
        # Records written before 0.6 have only the file's sha256; they are redone once when the file changed.
        kind = "test_split_sha256" if "test_split_sha256" in old else "manifest_sha256"
        try:
            stat = os.stat(data["manifest"])
            current = _manifest_key(str(data["manifest"]), stat.st_mtime_ns, stat.st_size, kind)
        except (OSError, UserError):
            current = None  # the cell run names the missing or broken manifest in its error
        if old.get(kind) != current or old.get("settings_sha256") != target_settings_hash(data):
            missing[name] = data
    return missing


@functools.lru_cache(maxsize=256)
def _manifest_key(path: str, mtime_ns: int, size: int, kind: str) -> str:
    """A target manifest's file sha256 or test-split key, read once per file version: the runner asks for every
    cell x target."""
    if kind == "manifest_sha256":
        from agebench.hashing import file_sha256

        return file_sha256(path)
    from agebench.data.manifest import load_manifest

    return load_manifest(path, check_files=False, required_splits=("test",)).split_sha256("test")


def dropped_targets(spec: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Targets ``record`` holds that ``spec`` no longer names: metrics.json loses them (their files stay)."""
    return sorted(set(record.get("cross") or {}) - set(spec.get("cross") or {}))


def cross_evaluate(
    spec: dict[str, Any], cfg: Any, module: Any, record: dict[str, Any], cell_dir: Path
) -> dict[str, dict[str, Any]]:
    """The cross results of ``spec``'s targets, in its order: ``record``'s where still valid, the rest predicted."""
    import numpy as np

    from agebench.bench.cross import evaluate_target
    from agebench.data.manifest import load_manifest

    todo = missing_targets(spec, record)
    done = dict(record.get("cross") or {})
    if todo:
        source = load_manifest(cfg.data.manifest, cfg.data.root, check_files=False)
        train_ages = np.array([r.age for r in source.split("train")], dtype=np.float64)
        device = next(module.parameters()).device
        precision = str(cfg.trainer.get("precision", "32-true"))
        tta = cfg.eval.tta  # the targets are predicted as the cell's own test split is
        for name, data in todo.items():
            done[name] = evaluate_target(module, name, data, source, train_ages, cell_dir, device, precision, tta)
    return {name: done[name] for name in spec.get("cross") or {}}


def _eval_device(cfg: Any):
    import torch

    on_gpu = cfg.trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def _try_cross(spec: dict[str, Any], cfg: Any, module: Any, record: dict[str, Any], cell_dir: Path) -> bool:
    """Put the cross results in ``record``; False (and one line on stderr) when a target cannot be read: the
    in-domain result still stands and a rerun adds the targets once they are fixed."""
    try:
        record["cross"] = cross_evaluate(spec, cfg, module, record, cell_dir)
    except UserError as err:
        print(f"cell {spec['dataset']}/{spec['model']}/seed{spec['seed']}: cross evaluation failed: {err}",
              file=sys.stderr)  # fmt: skip
        return False
    return True


def add_cross_results(cell_dir: Path, spec: dict[str, Any], record: dict[str, Any]) -> int:
    """A finished cell gains the targets it lacks: its best checkpoint predicts them; nothing is retrained."""
    from agebench.config import FitConfig, from_dict
    from agebench.runs import load_regressor

    cfg = from_dict(FitConfig, spec["fit"])
    best = cell_dir / "checkpoints" / "best.ckpt"
    module = load_regressor(best if best.is_file() else Path(record["checkpoint"])).to(_eval_device(cfg))
    ok = _try_cross(spec, cfg, module, record, cell_dir)
    atomic.write_json(cell_dir / "metrics.json", record)
    return 0 if ok else EXIT_FAILED


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
    finished = finished_record(cell_dir, spec["config_hash"])
    if finished is not None:
        return add_cross_results(cell_dir, spec, finished) if is_launch_rank_zero() else 0
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
    # Cross targets before profiling: the profile may cast the module (bf16-true) or change its memory format,
    # and a target added later is predicted from the fp32 best checkpoint; both ways must give the same figures.
    cross_ok = _try_cross(spec, cfg, module, metrics, cell_dir) if spec.get("cross") else True
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
    if spec.get("fold"):
        record["fold"] = spec["fold"]  # the leaderboard pools a model's folds into one row
    if spec.get("factors"):  # a grid variant: the leaderboard groups a model's variants and shows the factors
        record["factors"], record["variant_of"] = spec["factors"], spec["variant_of"]
    atomic.write_json(cell_dir / "metrics.json", record)
    return 0 if cross_ok else EXIT_FAILED


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m agebench.bench.cell CELL_DIR")
    sys.exit(run_cell(Path(sys.argv[1])))
