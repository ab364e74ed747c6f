"""Which process this is under a launcher (torchrun, srun, Lightning's own), what SLURM job it belongs to, how
many CPU cores it may use and whether they run bf16 natively.

Read from the environment alone, before any process group exists: files a run owns (its folder, config.yaml,
metrics.json) are written by the launch's global rank 0 only, and every rank must agree on that before training.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_launch_rank_zero() -> bool:
    """True in the process that owns the cell's files: global rank 0 under torchrun, srun or Lightning's launcher."""
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if key in env:
            return int(env[key]) == 0
    return int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", 0)) == 0


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job: ``ARRAYJOB_TASK`` inside an array task, else the job id."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's native bf16 instruction sets (avx512_bf16, amx_bf16); empty where it has none or cpuinfo is
    unreadable. Without them bf16 autocast on the CPU is emulated and many times slower than fp32."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(flags & {"avx512_bf16", "amx_bf16"})


def process_cpus(local_ranks: int = 1) -> int:
    """CPU cores this process may use: its task's ``SLURM_CPUS_PER_TASK`` inside a SLURM job (one rank is one
    task; without cgroups every task sees the whole node, and threads sized to the node oversubscribe it when
    several array tasks share it), else this process's affinity mask (cgroups, taskset) shared by its node's ranks."""
    env = os.environ
    if "SLURM_JOB_ID" in env and env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(env["SLURM_CPUS_PER_TASK"]))
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, available // max(1, local_ranks))
