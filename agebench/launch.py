"""Which process this is under a launcher (torchrun, srun, Lightning's own), what SLURM job it belongs to, and
whether its CPU runs bf16 natively.

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
