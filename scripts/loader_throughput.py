"""Loader throughput: the uint8 crop cache against JPEG decoding + crop + resize, on the same images.

Usage:
    python scripts/loader_throughput.py                      # N synthetic 250x250 JPEGs in a temp folder
    python scripts/loader_throughput.py --manifest M.csv --root RAW --n 2000 --workers 4 --size 128
    python scripts/loader_throughput.py --train              # the paper's training loader, 1 and 2 workers

``--train`` measures the training loader as a paper config builds it (default experiments/paper/morph2.yaml,
its first cell's resolved data section: 224 px, per-device batch 32, the default augmentation) through
``agebench.train.build_datamodule`` and ``AgeDataModule.train_dataloader()``, the code a training run uses:
JPEG decode + RandomResizedCrop + flip + colour jitter + normalise to float32 (``data.use_cache=false``), and the
same transform on rows of a uint8 crop cache (``data.use_cache=true``, built at ``--cache-size``, 256 as the
paper's ``agebench prepare --cache-size 256``). For each worker count of ``--worker-counts`` it prints images/s,
images/s per worker, the workers (one core each: OpenCV and torch run one thread per worker) that 1,000 and
3,000 images/s need (target / per-worker rate, rounded up), and the CPU milliseconds per image of the workers
and of the main process, as a markdown table. Each epoch's rate is timed from its first batch, so it is the
steady state, not the workers' start; a warm-up epoch runs first. On a machine shared with other jobs the wall
rates are lower bounds; the CPU time per image is what a core of one's own would spend (1000 / ms = img/s).

Both loaders are a plain torch DataLoader over a tiny Dataset (no augmentation, no DataModule) that yields
uint8 [3, size, size] tensors of the same crops: one decodes the JPEG (cv2) and warps the centre square to
size x size, the other copies the row from the memmapped cache. One warm-up epoch runs first (workers started,
files in the OS page cache), then ``--epochs`` epochs are timed, so the figures are decode/copy cost, not disk.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agebench.bench.plan import expand, load_bench_config  # noqa: E402
from agebench.config import FitConfig, from_dict  # noqa: E402
from agebench.data.cache import build_cache, open_cache  # noqa: E402
from agebench.data.faces import crop  # noqa: E402
from agebench.data.images import read_rgb  # noqa: E402
from agebench.data.manifest import Manifest, load_manifest, write_manifest  # noqa: E402


def synthetic_jpegs(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """Photo-like JPEGs (smooth colour fields plus fine noise, quality 95), so decoding costs what a face does."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
        image = np.clip(base.astype(np.int16) + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        rel = f"images/{i:06d}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / rel), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows.append(
            {"path": rel, "age": float(i % 90), "subject_id": f"s{i}", "split": ("train", "val", "test")[i % 3]}
        )
    return write_manifest(rows, folder / "manifest.csv")


class JpegCrops(Dataset):
    def __init__(self, manifest: Manifest, size: int, n: int) -> None:
        self.paths = [str(manifest.image_path(r)) for r in manifest.records[:n]]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(crop(read_rgb(self.paths[i]), None, self.size)).permute(2, 0, 1)


class CachedCrops(Dataset):
    def __init__(self, reader, n: int) -> None:
        self.reader, self.n = reader, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.get(i)).permute(2, 0, 1)


def _one_thread(_: int) -> None:
    cv2.setNumThreads(1)


def measure(dataset: Dataset, workers: int, batch: int, epochs: int) -> float:
    """Images per second over ``epochs`` timed epochs, after one warm-up epoch."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_one_thread if workers else None,
    )
    for _ in loader:  # warm-up: starts the workers, fills the page cache
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for b in loader:
            seen += len(b)
    return seen / (time.perf_counter() - start)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or platform.machine()


def paper_data_config(config: str, manifest: Path, root: Path, out: Path) -> FitConfig:
    """The resolved fit config of the bench config's first cell, reading ``manifest`` instead of its data set."""
    bench = load_bench_config(config)
    bench = dataclasses.replace(
        bench, models=bench.models[:1], seeds=bench.seeds[:1], datasets={"loader": {"manifest": str(manifest)}}
    )
    fit = from_dict(FitConfig, expand(bench, out)[0].fit)
    fit.data.root, fit.data.allow_leaky_splits = str(root), True  # a real manifest's first rows may share subjects
    return fit


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def training_rate(fit: FitConfig, workers: int, use_cache: bool, epochs: int) -> dict[str, float]:
    """``train_dataloader()``'s images/s (steady state: each epoch timed from its first batch) and its CPU cost:
    the loader workers' CPU milliseconds per image (ended, reaped children: the loader is not persistent) and
    the main process's (receiving the batches), over whole epochs. Wall rates fall when other jobs share the
    cores; CPU time per image much less."""
    from agebench.train import build_datamodule

    fit = copy.deepcopy(fit)
    fit.data.num_workers, fit.data.use_cache = workers, use_cache
    dm = build_datamodule(fit)
    dm.setup("fit")
    if use_cache and dm.datasets["train"].cache is None:
        raise SystemExit(f"{fit.data.manifest}: no usable crop cache at {fit.data.img_size} px")
    rates, images, worker_cpu, main_cpu = [], 0, 0.0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up (page cache, first imports in the workers)
        children, main = _cpu_seconds(resource.RUSAGE_CHILDREN), _cpu_seconds(resource.RUSAGE_SELF)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        start, seen, total = None, 0, 0
        for batch in loader:
            total += len(batch["index"])
            if start is None:
                start = time.perf_counter()
            else:
                seen += len(batch["index"])
        elapsed = time.perf_counter() - start if start is not None else 0.0
        del loader  # its workers have exited and been joined: their CPU time is in RUSAGE_CHILDREN
        if epoch and seen:
            rates.append(seen / elapsed)
            images += total
            worker_cpu += _cpu_seconds(resource.RUSAGE_CHILDREN) - children
            main_cpu += _cpu_seconds(resource.RUSAGE_SELF) - main
    return {
        "images_per_second": sum(rates) / len(rates),
        "worker_cpu_ms": 1000 * worker_cpu / images,
        "main_cpu_ms": 1000 * main_cpu / images,
    }


def train_main(args: argparse.Namespace, tmp: Path) -> int:
    """--train: the paper's training loader, JPEG and cache, per worker count; a markdown table."""
    cv2.setNumThreads(1)  # forked workers inherit it (torch sets one thread in each worker itself)
    if args.manifest:
        source = load_manifest(args.manifest, args.root, required_splits=())
    else:
        source = load_manifest(synthetic_jpegs(tmp, args.n + 2, args.jpeg_side), required_splits=())
    records = source.records[: args.n + 2]
    splits = ["train"] * (len(records) - 2) + ["val", "test"]  # every image but two is a training image
    rows = [
        {"path": r.path, "age": r.age, "subject_id": r.subject_id, "split": s}
        for r, s in zip(records, splits, strict=True)
    ]
    bench = write_manifest(rows, tmp / "train.csv")
    config = args.config if Path(args.config).is_file() else str(Path(__file__).resolve().parents[1] / args.config)
    fit = paper_data_config(config, bench, source.root, tmp / "results")
    if args.size:
        fit.data.img_size = args.size
    if args.batch_size:
        fit.data.batch_size = args.batch_size
    size, n = fit.data.img_size, len(records) - 2
    cache_size = max(args.cache_size, size)
    build_cache(load_manifest(bench, source.root, required_splits=()), size=cache_size, workers=2, progress=False)
    aug = fit.data.augment
    print(
        f"training loader ({args.config}: {size} px, batch {fit.data.batch_size}, augment scale_min "
        f"{aug.scale_min} hflip {aug.hflip} color_jitter {aug.color_jitter}; {n} training images, "
        f"{args.epochs} timed epoch(s) after a warm-up); CPU: {cpu_name()}, "
        f"{os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}"
    )
    names = {False: f"JPEG decode + augment -> {size} px", True: f"uint8 cache {cache_size} px + augment -> {size} px"}
    head = (
        "| loader | workers | img/s | img/s per worker | workers for 1,000 img/s | workers for 3,000 img/s "
        "| worker CPU ms/img | main process CPU ms/img |"
    )
    lines, figures = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"], []
    for use_cache in (False, True):
        for workers in args.worker_counts:
            measured = training_rate(fit, workers, use_cache, args.epochs)
            rate = measured["images_per_second"]
            per = rate / workers
            need = {target: math.ceil(target / per) for target in (1000, 3000)}
            lines.append(
                f"| {names[use_cache]} | {workers} | {rate:,.0f} | {per:,.0f} | {need[1000]} | {need[3000]} | "
                f"{measured['worker_cpu_ms']:.2f} | {measured['main_cpu_ms']:.2f} |"
            )
            row = {"loader": "cache" if use_cache else "jpeg", "workers": workers, **measured, "per_worker": per}
            figures.append({**row, "workers_for": need})
    print("\n".join(lines))
    if args.json:
        settings = {"img_size": size, "cache_size": cache_size, "batch_size": fit.data.batch_size, "images": n}
        Path(args.json).write_text(json.dumps({"config": args.config, **settings, "rows": figures}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", help="manifest CSV (default: make synthetic JPEGs)")
    p.add_argument("--root", help="data root of --manifest (default: its folder)")
    p.add_argument("--n", type=int, default=1000, help="images to load (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--size", type=int, help="crop side in pixels (default 128; --train: the config's img_size)")
    p.add_argument("--batch-size", type=int, help="default 64; --train: the config's data.batch_size")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up (default 2)")
    p.add_argument("--jpeg-side", type=int, default=250, help="side of the synthetic JPEGs (default 250, as CACD)")
    p.add_argument("--train", action="store_true", help="the paper's training loader (see the module docstring)")
    p.add_argument("--config", default="experiments/paper/morph2.yaml", help="--train: the bench config")
    p.add_argument("--json", help="--train: also write the figures to this JSON file")
    p.add_argument("--cache-size", type=int, default=256, help="--train: side of the cache rows (default 256)")
    p.add_argument(
        "--worker-counts", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2], help="--train: 1,2"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.train:
            return train_main(args, tmp)
        args.size, args.batch_size = args.size or 128, args.batch_size or 64
        if args.manifest:
            source = load_manifest(args.manifest, args.root, required_splits=())
        else:
            source = load_manifest(synthetic_jpegs(tmp, args.n, args.jpeg_side), required_splits=())
        rows = [{"path": r.path, "age": r.age, "subject_id": r.subject_id, "split": r.split} for r in source.records]
        bench = write_manifest(rows[: args.n], tmp / "bench.csv")  # the first n rows, its cache in tmp
        manifest = load_manifest(bench, source.root, required_splits=())
        n = len(manifest.records)
        build_cache(manifest, size=args.size, crops={}, workers=args.workers, progress=False)  # centre squares
        reader = open_cache(bench)
        jpeg = measure(JpegCrops(manifest, args.size, n), args.workers, args.batch_size, args.epochs)
        cache = measure(CachedCrops(reader, n), args.workers, args.batch_size, args.epochs)
    per = max(1, args.workers)
    print(
        f"loader throughput: {n} images -> uint8 [3, {args.size}, {args.size}], batch {args.batch_size}, "
        f"{args.workers} DataLoader worker(s), {args.epochs} timed epoch(s) after a warm-up; "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
    )
    print(f"{'loader':<34}{'img/s':>10}{'img/s/worker':>14}")
    print(f"{'JPEG decode + crop + resize':<34}{jpeg:>10.0f}{jpeg / per:>14.0f}")
    print(f"{'uint8 cache (memmap copy)':<34}{cache:>10.0f}{cache / per:>14.0f}")
    print(f"cache / JPEG: {cache / jpeg:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
