"""The scale path on real engines: a private SLURM cluster (scripts/slurm_local.sh) running the bench array, a
requeue after a time-limit signal, a failing cell under SLURM, and one cell on two torchrun "nodes" (gloo).

Marked ``cluster``: ``make test-cluster`` runs them (and the paper dry run); ``make test`` leaves them out. Every
cell runs with OMP_NUM_THREADS=1, locally and under SLURM alike, so that both compute with the same kernels:
without cgroups a SLURM task sees every core of the host, and a thread count that follows the load would make
"the same cell" two slightly different computations.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import make_image_set

from agebench.cli import main
from agebench.data.manifest import load_manifest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
SUBMIT = REPO / "experiments" / "cluster" / "submit_array.sh"
TORCHRUN = REPO / "experiments" / "cluster" / "torchrun.sh"
BASE_ENV = dict(
    os.environ,
    PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    PYTHONPATH=str(REPO),
    OMP_NUM_THREADS="1",
    PYTHONUNBUFFERED="1",
)
# One CPU per task, no GPU: the sbatch file's 4-GPU default overridden from the command line, as a user would.
CPU_TASK = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0", "--time=20"]
# Figures a cell computes; timings, memory, latency and provenance differ between any two runs.
VOLATILE = {
    "train_seconds",
    "train_throughput",
    "peak_memory_mb",
    "peak_memory_kind",
    "checkpoint",
    "wall_seconds",
    "provenance",
    "latency_ms",
    "latency_ms_std",
    "latency_batch1_ms",
    "throughput",
    "profile",
}


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if check:
            assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout}{out.stderr}"
        return out.stdout

    def job_states(self, job: str) -> dict[str, str]:
        """Array task id -> JobState (finished jobs stay listed: MinJobAge in slurm.conf)."""
        states = {}
        for line in self.run("scontrol", "show", "job", "-o", job).splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            states[fields.get("ArrayTaskId", "0")] = fields["JobState"]
        return states

    def wait(self, job: str, timeout: float = 600) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.job_states(job)
            if states and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states.values()):
                return states
            time.sleep(1)
        raise AssertionError(f"job {job} still running after {timeout} s: {self.job_states(job)}")


def daemon_pids(folder: Path) -> dict[str, int]:
    pids = {}
    for name in ("munged", "slurmctld", "slurmd"):
        file = folder / "run" / f"{name}.pid"
        if file.is_file() and file.read_text().strip():
            pids[name] = int(file.read_text().strip())
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").is_file() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    folder = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", str(SLURM_LOCAL), "up", str(folder)], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stderr
    pids = daemon_pids(folder)
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    try:
        yield Cluster(folder, dict(BASE_ENV, SLURM_CONF=str(folder / "slurm.conf")))
    finally:
        subprocess.run(["bash", str(SLURM_LOCAL), "down", str(folder)], capture_output=True, timeout=120)
        assert not [name for name, pid in pids.items() if alive(pid)], "slurm_local.sh down left daemons running"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """240 images (160 train, 40 val, 40 test): 40 steps an epoch at batch 4, long enough to be interrupted."""
    return make_image_set(tmp_path_factory.mktemp("data"), n=240, size=40, subjects=24)


def bench_config(folder: Path, manifest: Path, models: list[str], seeds: list[int], epochs: int) -> Path:
    config = {
        "models": models,
        "datasets": {"tiny": {"manifest": str(manifest)}},
        "seeds": seeds,
        "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
        "data": {"img_size": 64, "batch_size": 4, "num_workers": 0},  # 64 px: no model is degenerate
        "optim": {"lr": 1.0e-3},
        "logger": {"kind": "none"},
        "profile": {"batch_size": 2, "warmup": 1, "iters": 2},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def submit(cluster: Cluster, config: Path, results: Path, *sbatch: str) -> str:
    env = dict(cluster.env, RESULTS=str(results), LOGS=str(results.parent / "logs"))
    out = subprocess.run(
        ["bash", str(SUBMIT), str(config), *CPU_TASK, *sbatch], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().split(";")[0]


def run_locally(config: Path, results: Path) -> None:
    """The same cells through `agebench bench` (the runner in this process, each cell in its own, as always)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        assert main(["bench", "--config", str(config), "--out", str(results), *SETTINGS]) == 0


# What slurm_array.sbatch adds for one rank on one node; the local run gets the same, so the cells hash alike.
SETTINGS = ["trainer.devices=1", "trainer.num_nodes=1"]


def cell_figures(cell: Path) -> tuple[dict, bytes]:
    metrics = json.loads((cell / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in VOLATILE}, (cell / "predictions.csv").read_bytes()


def logs(results: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((results.parent / "logs").glob("*.out"))}


def test_array_cells_equal_local_cells_and_a_resubmission_redoes_nothing(cluster, manifest, tmp_path):
    config = bench_config(tmp_path, manifest, ["convnext-atto", "hybrid-atto"], [0, 1], epochs=2)
    results = tmp_path / "slurm" / "results"
    job = submit(cluster, config, results)
    states = cluster.wait(job)
    assert states == {str(i): "COMPLETED" for i in range(4)}, (states, logs(results))
    run_locally(config, tmp_path / "local")
    cells = sorted(results.glob("tiny/*/seed*/metrics.json"))
    assert len(cells) == 4
    for metrics_file in cells:
        cell = metrics_file.parent
        figures, predictions = cell_figures(cell)
        assert figures["status"] == "ok" and figures["n_test"] == 40
        local_figures, local_predictions = cell_figures(tmp_path / "local" / cell.relative_to(results))
        assert figures == local_figures
        assert predictions == local_predictions

    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    again = submit(cluster, config, results)
    assert cluster.wait(again) == {str(i): "COMPLETED" for i in range(4)}
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()} == stamps  # nothing rewritten
    second = [text for name, text in logs(results).items() if f"-{again}_" in name]
    assert len(second) == 4
    assert all("finished; the launch will do nothing" in text and "already finished" in text for text in second)


def test_a_preempted_task_requeues_and_resumes_to_the_uninterrupted_result(cluster, manifest, tmp_path):
    config = bench_config(tmp_path, manifest, ["convnext-atto"], [0], epochs=4)
    results = tmp_path / "slurm" / "results"
    cell = results / "tiny" / "convnext-atto" / "seed0"
    job = submit(cluster, config, results)
    task = f"{job}_0"
    deadline = time.monotonic() + 300
    while not (cell / "checkpoints" / "last.ckpt").is_file():  # the first epoch has ended
        assert time.monotonic() < deadline and cluster.job_states(job)["0"] in ("PENDING", "RUNNING"), logs(results)
        time.sleep(0.1)
    # What a time limit sends (sbatch --signal=SIGUSR1@90), sent now: the job requeues itself.
    cluster.run("scancel", "--signal=USR1", task)
    deadline = time.monotonic() + 120
    while cluster.job_states(job)["0"] not in ("PENDING", "COMPLETED"):
        assert time.monotonic() < deadline, cluster.job_states(job)
        time.sleep(0.2)
    assert not (cell / "metrics.json").is_file(), "the cell finished before the signal took effect"
    # A requeued job waits out SLURM's requeue delay (BeginTime); an operator may start it at once.
    cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now")
    assert cluster.wait(job) == {"0": "COMPLETED"}, logs(results)

    (text,) = logs(results).values()
    assert "SIGUSR1 received during epoch" in text and f"requeued SLURM job {task}" in text
    assert "(restart 1)" in text and "resuming from" in text
    assert not list(cell.glob("hpc_ckpt_*.ckpt"))  # no mid-epoch checkpoint is written, none is used
    run_locally(config, tmp_path / "local")
    assert cell_figures(cell) == cell_figures(tmp_path / "local" / "tiny" / "convnext-atto" / "seed0")


def test_a_failing_cell_under_slurm_is_failed_and_the_next_submission_resumes_it(cluster, tmp_path, capsys):
    manifest = make_image_set(tmp_path / "data", n=48, size=40, subjects=12)
    test_path = next(r.path for r in load_manifest(manifest).records if r.split == "test")
    good = (manifest.parent / test_path).read_bytes()
    (manifest.parent / test_path).write_bytes(b"")  # found at the final evaluation, after training
    config = bench_config(tmp_path, manifest, ["convnext-atto"], [0], epochs=1)
    results = tmp_path / "slurm" / "results"
    cell = results / "tiny" / "convnext-atto" / "seed0"
    assert cluster.wait(submit(cluster, config, results)) == {"0": "FAILED"}
    record = json.loads((cell / "metrics.json").read_text())
    assert record["status"] == "failed" and record["resumable"] and test_path in record["error"]
    assert main(["bench", "--config", str(config), "--out", str(results), "--list", *SETTINGS]) == 0
    listing = capsys.readouterr().out
    assert "tiny/convnext-atto/seed0" in listing and listing.rstrip().endswith("resume")

    (manifest.parent / test_path).write_bytes(good)
    job = submit(cluster, config, results)
    assert cluster.wait(job) == {"0": "COMPLETED"}
    assert json.loads((cell / "metrics.json").read_text())["status"] == "ok"
    text = next(t for name, t in logs(results).items() if f"-{job}_" in name)
    assert "interrupted earlier; the launch resumes it" in text and "resuming from" in text


def rank_process(job: str, rank: int) -> int | None:
    """The pid of the cell process that runs as SLURM rank ``rank`` of ``job`` (found by its environment)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_text()
        except OSError:
            continue
        ours = env.get("SLURM_JOB_ID") == job and env.get("SLURM_PROCID") == str(rank)
        if ours and "agebench" in cmdline and "--prepare" not in cmdline and "srun" not in cmdline:
            return int(proc.name)
    return None


def test_a_rank_that_dies_under_srun_leaves_the_cell_resumable_and_the_next_submission_finishes_it(
    cluster, manifest, tmp_path, capsys
):
    """Two DDP ranks (gloo) under srun, as on a GPU node with two devices: rank 1 is killed after the first epoch;
    srun takes the other rank down, the task fails, and the cell resumes on the next submission."""
    config = bench_config(tmp_path, manifest, ["convnext-atto"], [0], epochs=3)
    results = tmp_path / "slurm" / "results"
    cell = results / "tiny" / "convnext-atto" / "seed0"
    two_ranks = ["--ntasks-per-node=2"]  # after CPU_TASK's 1: the last one counts
    job = submit(cluster, config, results, *two_ranks)
    deadline = time.monotonic() + 300
    while not (cell / "checkpoints" / "last.ckpt").is_file():
        assert time.monotonic() < deadline and cluster.job_states(job)["0"] in ("PENDING", "RUNNING"), logs(results)
        time.sleep(0.1)
    pid = rank_process(job, 1)
    assert pid is not None
    os.kill(pid, 9)
    assert cluster.wait(job) == {"0": "FAILED"}
    assert not (cell / "metrics.json").is_file()
    settings = ["trainer.devices=2", "trainer.num_nodes=1", "trainer.strategy=ddp"]
    assert main(["bench", "--config", str(config), "--out", str(results), "--list", *settings]) == 0
    assert capsys.readouterr().out.rstrip().endswith("resume")

    again = submit(cluster, config, results, *two_ranks)
    assert cluster.wait(again) == {"0": "COMPLETED"}, logs(results)
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 3 and metrics["n_test"] == 40
    first = next(t for name, t in logs(results).items() if f"-{job}_" in name)
    assert "MEMBER: 1/2" in first  # Lightning took both ranks from SLURM
    text = next(t for name, t in logs(results).items() if f"-{again}_" in name)
    assert "resuming from" in text and "resumed: training from epoch" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_cell_on_two_torchrun_nodes_of_one_process_each(manifest, tmp_path):
    """Two torchrun "nodes" on localhost meet at a c10d rendezvous; each gets its own results folder, as two
    hosts without a shared file system would: the one that became global rank 0 holds every file, the other none."""
    config = bench_config(tmp_path, manifest, ["convnext-atto"], [0], epochs=1)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for rank in (0, 1):
        out = str(tmp_path / f"n{rank}")
        env = dict(BASE_ENV, NNODES="2", NODE_RANK=str(rank), RDZV_ENDPOINT=endpoint, RESULTS=out)
        log = open(tmp_path / f"node{rank}.log", "w")  # noqa: SIM115 - closed below
        nodes.append((subprocess.Popen(["bash", str(TORCHRUN), str(config), "0", "1"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))  # fmt: skip
    for proc, log in nodes:
        assert proc.wait(timeout=600) == 0, (tmp_path / "node0.log").read_text()[-3000:]
        log.close()
    texts = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    members = sorted(line for text in texts for line in text.splitlines() if "Initializing distributed" in line)
    assert [m.split("MEMBER: ")[1] for m in members] == ["1/2", "2/2"], members
    files = [sorted(p for p in (tmp_path / f"n{rank}").rglob("*") if p.is_file()) for rank in (0, 1)]
    writer = 0 if files[0] else 1
    assert files[1 - writer] == []  # the other rank wrote nothing at all
    cell = tmp_path / f"n{writer}" / "tiny" / "convnext-atto" / "seed0"
    metrics = json.loads((cell / "metrics.json").read_text())
    paths = [line.split(",")[0] for line in (cell / "predictions.csv").read_text().splitlines()[1:]]
    assert metrics["status"] == "ok" and len(paths) == len(set(paths)) == metrics["n_test"] == 40
    assert json.loads((cell / "cell.json").read_text())["fit"]["trainer"]["num_nodes"] == 2
