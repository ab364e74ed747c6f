"""`agebench bench`: every (model, data set, seed) cell in its own process, skipping finished ones.

Why a process per cell: DDP, CUDA state and Lightning's launchers assume one training run per process, and a
crash (or an OOM kill) of one cell must not take the others down. A cell is finished when its metrics.json
exists with status "ok" and the config hash it ran under; anything else is (re)run, resuming from the
cell's last checkpoint when the config is unchanged. The child follows the runner's death (PR_SET_PDEATHSIG).
The runner holds a lock per cell (``.<cell>.lock`` beside its folder, so deleting the folder keeps it) while it
resets and runs the cell, so a second runner on the same results skips the cells the first one holds, and an
interrupted runner never leaves a ghost writing into a rerun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agebench import atomic
from agebench.bench.cell import LOCK_HELD_ENV, dropped_targets, lock_cell, missing_targets
from agebench.bench.plan import Cell, expand, load_bench_config
from agebench.errors import UserError

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cell_state(cell: Cell, cell_dir: Path) -> str:
    """'done', 'cross' (finished, but a cross-dataset target is missing or changed), 'stale' (finished under another
    config), 'resume' (has a checkpoint), 'failed' or 'new'."""
    metrics = cell_dir / "metrics.json"
    if metrics.is_file():
        try:
            record = json.loads(metrics.read_text())
        except json.JSONDecodeError:
            return "new"
        if record.get("config_hash") != cell.config_hash:
            return "stale"
        if record.get("status") == "ok":
            spec = cell_spec(cell)
            return "cross" if missing_targets(spec, record) or dropped_targets(spec, record) else "done"
        if record.get("resumable") and (cell_dir / "checkpoints" / "last.ckpt").is_file():
            return "resume"  # an input fault (bad image) stopped it: keep its checkpoints
        return "failed"
    if (cell_dir / "cell.json").is_file():
        try:
            same = json.loads((cell_dir / "cell.json").read_text()).get("config_hash") == cell.config_hash
        except json.JSONDecodeError:
            same = False
        if not same:
            return "stale"
    return "resume" if (cell_dir / "checkpoints" / "last.ckpt").is_file() else "new"


def _die_with_parent() -> None:  # runs in the child before exec (Linux only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_cell_process(cell: Cell, cell_dir: Path, progress: Progress | None, task: Any) -> int:
    """Run one cell; Lightning's bar shows in the progress line, the whole output goes to cell.log."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{LOCK_HELD_ENV: str(cell_dir.resolve())})
    cmd = [sys.executable, "-m", "agebench.bench.cell", str(cell_dir)]
    with open(cell_dir / "cell.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        assert proc.stdout is not None
        pending = b""
        try:
            while chunk := proc.stdout.read1(4096):
                log.write(chunk)
                pending = (pending + chunk)[-4096:]
                parts = [p for p in re.split(rb"[\r\n]", pending) if p.strip()]
                if progress is not None and parts:
                    text = ANSI.sub("", parts[-1].decode("utf-8", "replace")).strip()
                    progress.update(task, status=text[-100:])
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    text = ANSI.sub("", path.read_bytes().decode("utf-8", "replace")).replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def cell_spec(cell: Cell) -> dict[str, Any]:
    return {
        "dataset": cell.dataset,
        "model": cell.model,
        "seed": cell.seed,
        "fit": cell.fit,
        "profile": asdict(cell.profile),
        "config_hash": cell.config_hash,
        "cross": cell.cross,
        "fold": cell.fold,
        **({"factors": cell.factors, "variant_of": cell.variant_of} if cell.factors else {}),
    }


def list_cells(
    config: str | os.PathLike[str],
    results: str | os.PathLike[str],
    overrides: list[str] | None = None,
    console: Console | None = None,
) -> int:
    """Print the cells with their index (for --cell, e.g. as a SLURM array task id) and state."""
    console = console or Console()
    for i, cell in enumerate(expand(load_bench_config(config, overrides), results)):
        console.print(f"{i:4d}  {cell.key:50s} {cell_state(cell, Path(cell.fit['out_dir']))}", highlight=False)
    return 0


def run_one_cell(
    config: str | os.PathLike[str],
    results: str | os.PathLike[str],
    which: str,
    overrides: list[str] | None = None,
    *,
    prepare: bool = False,
) -> int:
    """Run cell ``which`` (an index or a dataset/model/seedK key) in this process.

    This is the form for launchers that start every rank themselves (torchrun, srun): all ranks run the
    same command, rank 0 writes the results. It never deletes anything, so ranks cannot race on files.
    ``prepare``: run nothing; do, in this one process, what the runner does before it starts a cell (remove a
    failed or stale run so that it is redone from scratch; keep a resumable one) and say what the launch will do.
    A job script calls it once before it starts the ranks (experiments/cluster/slurm_array.sbatch).
    """
    from agebench.bench.cell import run_cell

    cells = expand(load_bench_config(config, overrides), results)
    keys = [c.key for c in cells]
    if which.isdigit() and int(which) < len(cells):
        cell = cells[int(which)]
    elif which in keys:
        cell = cells[keys.index(which)]
    else:
        raise UserError(
            f"--cell {which!r}: no such cell; there are {len(cells)} (0..{len(cells) - 1}): "
            + ", ".join(keys[:10])
            + (" ..." if len(keys) > 10 else "")
        )
    cell_dir = Path(cell.fit["out_dir"])
    state = cell_state(cell, cell_dir)
    if prepare:
        return prepare_cell(cell, cell_dir, state)
    if state == "done":
        print(f"{cell.key}: already finished ({cell_dir / 'metrics.json'})")
        return 0
    if state in ("stale", "failed"):
        raise UserError(
            f"{cell.key}: {cell_dir} holds a {state} run; remove it (or rerun with the runner's "
            "--force) before running this cell alone"
        )
    return run_cell(cell_dir, cell_spec(cell))


def prepare_cell(cell: Cell, cell_dir: Path, state: str) -> int:
    """``--cell K --prepare``: reset a failed or stale cell (under its lock), print what the launch will do."""
    if state in ("stale", "failed"):
        lock = lock_cell(cell_dir)
        if lock is None:
            raise UserError(f"{cell.key}: another agebench process is running this cell")
        with lock:
            shutil.rmtree(cell_dir, ignore_errors=True)
        print(f"{cell.key}: held a {state} run, removed; it runs from scratch")
    else:
        says = {
            "done": "finished; the launch will do nothing",
            "cross": "finished; the launch predicts its new cross-dataset target(s)",
            "resume": "interrupted earlier; the launch resumes it from its last checkpoint",
            "new": "new; the launch runs it",
        }
        print(f"{cell.key}: {says[state]}")
    return 0


def run_bench(
    config: str | os.PathLike[str],
    results: str | os.PathLike[str],
    *,
    force: bool = False,
    overrides: list[str] | None = None,
    console: Console | None = None,
) -> int:
    """Returns 0 when every cell finished ok, 1 when any failed."""
    console = console or Console()
    results = Path(results)
    cells = expand(load_bench_config(config, overrides), results)
    manifests = {c.dataset: c.fit["data"]["manifest"] for c in cells}
    for cell in cells:
        manifests.update({name: data["manifest"] for name, data in cell.cross.items()})
    for name, manifest in manifests.items():
        if not Path(manifest).is_file():
            raise UserError(
                f"data set {name!r}: manifest {manifest} not found "
                "(`agebench synth --out DIR` or `agebench prepare ...` makes one)"
            )
    validate_cells(cells)
    plan = []
    for cell in cells:
        cell_dir = Path(cell.fit["out_dir"])
        state = "new" if force else cell_state(cell, cell_dir)
        plan.append((cell, cell_dir, state))
    todo = [(c, d, s) for c, d, s in plan if s != "done"]
    console.print(f"bench: {len(cells)} cell(s), {len(cells) - len(todo)} finished, {len(todo)} to run -> {results}")
    for cell, _, state in plan:
        if state in ("stale", "failed"):
            console.print(f"  {cell.key}: {state}, rerunning from scratch")
        elif state == "resume":
            console.print(f"  {cell.key}: interrupted earlier, resuming from its last checkpoint")
        elif state == "cross":
            console.print(
                f"  {cell.key}: finished; predicting its new cross-dataset target(s) with its best checkpoint"
            )
    failures, busy = 0, []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("cells", total=len(todo), status="")
        for cell, cell_dir, state in todo:
            progress.update(overall, description=f"cells  [bold]{cell.key}[/]", status="starting")
            # Hold the cell's lock before touching its folder: another runner on the same results may be in it.
            lock = lock_cell(cell_dir)
            if lock is None:
                busy.append(cell.key)
                progress.console.print(f"[yellow]skipped[/] {cell.key}: another agebench process is running it")
                progress.advance(overall)
                continue
            with lock:
                state = "new" if force else cell_state(cell, cell_dir)  # it may have changed meanwhile
                if state == "done":
                    progress.console.print(f"[green]done[/] {cell.key}: finished by another run meanwhile")
                    progress.advance(overall)
                    continue
                if force or state in ("stale", "failed"):
                    shutil.rmtree(cell_dir, ignore_errors=True)
                cell_dir.mkdir(parents=True, exist_ok=True)
                atomic.write_json(cell_dir / "cell.json", cell_spec(cell))
                code = run_cell_process(cell, cell_dir, progress, overall)
            progress.advance(overall)
            summary = _summarise(cell_dir)
            if code == 0 and summary:
                progress.console.print(f"[green]done[/] {cell.key}: {summary}")
            else:
                failures += 1
                progress.console.print(f"[red]failed[/] {cell.key} (exit {code}); last lines of {cell_dir}/cell.log:")
                progress.console.print(_tail(cell_dir / "cell.log"), markup=False, highlight=False)
    if busy:
        console.print(f"bench: {len(busy)} cell(s) left to the other run that holds them: {', '.join(busy)}")
    return 1 if failures else 0


def validate_cells(cells: list[Cell]) -> None:
    """Check every cell's values, image size and pretrained weights before the first cell starts."""
    from agebench.config import ConfigError, FitConfig, from_dict
    from agebench.validate import check_fit_config, validate_fit_config

    probed: set[str] = set()
    for cell in cells:
        cfg = from_dict(FitConfig, cell.fit)
        m = cfg.model
        key = json.dumps(
            [
                m.name,
                cfg.data.img_size,
                m.kwargs,
                m.pretrained,
                m.weights_dir,
                m.train_last_blocks,
                cfg.optim.layer_decay,
            ],
            sort_keys=True,
            default=str,
        )
        try:
            if key in probed:
                check_fit_config(cfg)
            else:
                validate_fit_config(cfg)
        except UserError as err:
            raise ConfigError(f"cell {cell.key}: {err}") from None
        probed.add(key)


def _summarise(cell_dir: Path) -> str | None:
    try:
        m = json.loads((cell_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if m.get("status") != "ok":
        return None
    cross = "".join(f"; on {t}: MAE {c['mae']:.2f}" for t, c in (m.get("cross") or {}).items())
    return (
        f"MAE {m['mae']:.2f} (mean predictor {m['baseline_mae']:.2f}), CS@5 {m['cs5']:.3f}, "
        f"{m['params'] / 1e6:.2f}M params, {m['latency_ms']:.2f} ms, {m['wall_seconds']:.0f} s{cross}"
    )
