"""The paper protocol, dry run on CPU: experiments/paper/synth_gpu.yaml through the code a GPU node runs.

Usage (`make paper-dry-run` calls it):
    python scripts/paper_dry_run.py [--out results/paper-dry] [--data data/synth-dry] [--nproc 2]

Each cell of the config (convnext, vit and hybrid, full size, 224 px, from scratch) runs as
``torchrun --standalone --nproc-per-node 2 -m agebench bench --config experiments/paper/synth_gpu.yaml --cell K``
(the command form of experiments/cluster/torchrun.sh) with 2 gloo processes on the CPU, and overrides that make
it cheap: one epoch of 2 training steps at batch 2 per rank, 1 validation batch, a tiny synthetic set (4 test
images), no loader workers and the profile cut to a few batch-1 passes. Precision is bf16-mixed where the CPU has
native bf16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo), else 32-true; one line says which.

Then it prints each cell's parameter count and training step time and fails (exit 1) unless every cell finished,
trained its 2 steps, predicted every test image, and has the parameter count of README.md's model table. A rerun
skips finished cells (`agebench bench --cell` says "already finished"); delete --out to run them again.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agebench.launch import cpu_bf16_flags as bf16_flags  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "experiments/paper/synth_gpu.yaml"
MODELS = ("convnext", "vit", "hybrid")
BATCH = 2  # per rank
STEPS = 2
# 30 faces of 6 subjects dealt 6/2/2: train/val/test 24/2/4 (2 ranks x 2 steps x batch 2 = 8 training images)
SYNTH = ["--n", "30", "--seed", "0", "--size", "224", "--splits", "6/2/2", "--quiet"]


def choose_precision(requested: str, flags: list[str]) -> tuple[str, str]:
    """(precision, why): bf16-mixed as on a GPU node where the CPU runs bf16 natively, else 32-true."""
    if requested != "auto":
        return requested, "asked for with --precision"
    if flags:
        return (
            "bf16-mixed",
            f"CPU flags {' '.join(flags)}: native bf16, so autocast runs the GPU node's bf16-mixed path",
        )
    return "32-true", "no avx512_bf16/amx_bf16 in /proc/cpuinfo: bf16 would be emulated, so fp32 here"


def readme_params(readme: Path = ROOT / "README.md") -> dict[str, str]:
    """README's model table: {"convnext": "28.02M", ...}, the first figure of each row's last column."""
    found = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*`([\w-]+)`\s*\|.*\|\s*([\d.]+M)\b[^|]*\|\s*$", line)
        if m and m.group(1) in MODELS:
            found.setdefault(m.group(1), m.group(2))
    return found


def overrides(data: Path, precision: str, nproc: int) -> list[str]:
    return [
        f"datasets.synth.manifest={data / 'manifest.csv'}",
        f"trainer.devices={nproc}",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        f"trainer.precision={precision}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS}",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        f"data.batch_size={BATCH}",
        "data.num_workers=0",
        "profile.batch_size=1",  # the profile cannot be switched off: a few batch-1 passes
        "profile.warmup=0",
        "profile.iters=1",
    ]


def run_cell(key: str, args: argparse.Namespace, extra: list[str], log: Path) -> tuple[int, float]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
        "-m", "agebench", "bench", "--config", CONFIG, "--out", str(args.out), "--cell", key, *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    with log.open("w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    return rc, time.perf_counter() - start


def trained_steps(cell_dir: Path) -> int:
    with (cell_dir / "logs" / "metrics.csv").open() as f:
        return sum(1 for row in csv.DictReader(f) if row.get("train/loss_step"))


def check_cell(cell_dir: Path, expected: str | None, n_test: int, nproc: int) -> tuple[list[str], str]:
    """(problems, one table row) for a cell's results."""
    metrics_file = cell_dir / "metrics.json"
    if not metrics_file.is_file():
        return [f"{cell_dir}: no metrics.json"], ""
    m = json.loads(metrics_file.read_text())
    if m.get("status") != "ok":
        return [f"{cell_dir}: status {m.get('status')}: {m.get('error')}"], ""
    problems = []
    params = f"{m['params'] / 1e6:.2f}M"
    if params != expected:
        problems.append(f"{cell_dir.parent.name}: {m['params']:,} parameters = {params}, README says {expected}")
    steps = trained_steps(cell_dir)
    if steps != STEPS:
        problems.append(f"{cell_dir}: {steps} training steps logged, expected {STEPS}")
    with (cell_dir / "predictions.csv").open() as f:
        n_pred = sum(1 for _ in csv.DictReader(f))
    if n_pred != n_test:
        problems.append(f"{cell_dir}: {n_pred} test predictions for {n_test} test images")
    step_s = BATCH * nproc / m["train_throughput"]  # images/s counts every rank's images
    row = (
        f"| {cell_dir.parent.name} | {m['params']:,} ({params}) | {expected} | {step_s:.2f} s | "
        f"{m['train_seconds']:.1f} s | {m['mae']:.2f} | {m['provenance']['precision']} |"
    )
    return problems, row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", type=Path, default=Path("results/paper-dry"), help="results folder (relative: to the repository root)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data/synth-dry"),
        help="the tiny synthetic set, made if missing (relative: to the repository root)",
    )
    p.add_argument("--nproc", type=int, default=2, help="gloo processes per cell (default 2)")
    p.add_argument("--precision", default="auto", help="auto (bf16-mixed where the CPU has bf16, else 32-true)")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    start = time.perf_counter()
    expected = readme_params()
    missing = [name for name in MODELS if name not in expected]
    if missing:
        print(f"paper dry run: README.md's model table has no parameter count for {', '.join(missing)}")
        return 1
    if not (args.data / "manifest.csv").is_file():
        subprocess.run([sys.executable, "-m", "agebench", "synth", "--out", str(args.data), *SYNTH], check=True)
    with (args.data / "manifest.csv").open() as f:
        n_test = sum(1 for row in csv.DictReader(f) if row["split"] == "test")
    precision, why = choose_precision(args.precision, bf16_flags())
    print(f"paper dry run: precision {precision} ({why})", flush=True)
    extra = overrides(args.data, precision, args.nproc)
    args.out.mkdir(parents=True, exist_ok=True)
    problems, rows = [], []
    for name in MODELS:
        key = f"synth/{name}/seed0"
        log = args.out / f"torchrun.{name}.log"
        rc, seconds = run_cell(key, args, extra, log)
        tail = log.read_text().splitlines()
        done = "already finished" if any("already finished" in line for line in tail) else f"rc {rc}"
        print(f"paper dry run: {key}: {done}, {seconds:.0f} s (torchrun, {args.nproc} gloo processes; log {log})")
        if rc != 0:
            print("\n".join(tail[-15:]))
            problems.append(f"{key}: torchrun exited {rc} (see {log})")
            continue
        cell_problems, row = check_cell(args.out / key, expected.get(name), n_test, args.nproc)
        problems += cell_problems
        if row:
            rows.append(row)
    print(f"\n| model | parameters | README | step time ({STEPS} steps, batch {BATCH} x {args.nproc} ranks, first "
          "included) | training | test MAE | precision |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print(f"\npaper dry run: {time.perf_counter() - start:.0f} s in all, results in {args.out}")
    for problem in problems:
        print(f"paper dry run: FAILED: {problem}")
    if not problems:
        print(f"paper dry run: ok: {len(rows)} cells trained, evaluated on all {n_test} test images and written; "
              "parameter counts equal README's")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
