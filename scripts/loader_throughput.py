"""Loader throughput: the uint8 crop cache against JPEG decoding + crop + resize, on the same images.

Usage:
    python scripts/loader_throughput.py                      # N synthetic 250x250 JPEGs in a temp folder
    python scripts/loader_throughput.py --manifest M.csv --root RAW --n 2000 --workers 4 --size 128

Both loaders are a plain torch DataLoader over a tiny Dataset (no augmentation, no DataModule) that yields
uint8 [3, size, size] tensors of the same crops: one decodes the JPEG (cv2) and warps the centre square to
size x size, the other copies the row from the memmapped cache. One warm-up epoch runs first (workers started,
files in the OS page cache), then ``--epochs`` epochs are timed, so the figures are decode/copy cost, not disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", help="manifest CSV (default: make synthetic JPEGs)")
    p.add_argument("--root", help="data root of --manifest (default: its folder)")
    p.add_argument("--n", type=int, default=1000, help="images to load (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels (default 128)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up (default 2)")
    p.add_argument("--jpeg-side", type=int, default=250, help="side of the synthetic JPEGs (default 250, as CACD)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
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
