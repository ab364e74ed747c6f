"""The preprocessed crop cache: every manifest image cropped once to PX x PX RGB uint8, in one .npy memmap.

Why: decoding and resizing a JPEG costs far more than copying a small array, and the crop (detector or
protocol box) is computed once instead of every epoch. Row i of ``<stem>.cache.npy`` is the crop of manifest
row i; ``<stem>.cache.json`` records the size, the sha256 of the manifest's ordered path list and of its crops
sidecar, so a cache that no longer matches its manifest is detected (CacheError) instead of serving wrong
pixels. Readers open the memmap lazily in each process, so a reader can be pickled into DataLoader workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from agebench.data.faces import Quad, crops_file, load_crop, read_crops
from agebench.data.images import ImageDecodeError
from agebench.data.manifest import Manifest, file_sha256, load_manifest
from agebench.errors import UserError

CACHE_VERSION = 1
CropFn = Callable[[Path, "Quad | None", int], np.ndarray]


class CacheError(UserError):
    """A cache that does not match its manifest (stale) or cannot be read."""


def cache_files(manifest_file: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(array, sidecar) of a manifest's cache: ``<stem>.cache.npy`` and ``<stem>.cache.json`` beside it."""
    m = Path(manifest_file)
    return m.with_name(f"{m.stem}.cache.npy"), m.with_name(f"{m.stem}.cache.json")


def paths_sha256(paths: list[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()


def _manifest_paths(manifest_file: Path) -> list[str]:
    with open(manifest_file, newline="", encoding="utf-8-sig") as fh:
        return [row["path"].strip() for row in csv.DictReader(fh)]


class CacheReader:
    """Crops by manifest path or row index. Picklable; the memmap is (re)opened lazily in each process."""

    def __init__(self, file: Path, paths: list[str], size: int) -> None:
        self.file, self.size = Path(file), size
        self.paths = paths
        self.index = {p: i for i, p in enumerate(paths)}
        self._array: np.ndarray | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None, "_pid": -1}

    def _data(self) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.file, mmap_mode="r")
            self._pid = os.getpid()
        return self._array

    def get(self, key: str | int) -> np.ndarray:
        """RGB uint8 [size, size, 3] crop of a manifest path (or row index); a private, writable copy."""
        if isinstance(key, (int, np.integer)):
            i = int(key)
        else:
            try:
                i = self.index[key]
            except KeyError:
                raise KeyError(f"{key!r} is not in the cache {self.file}") from None
        return np.array(self._data()[i])


def open_cache(
    manifest_file: str | os.PathLike[str], cache_file: str | os.PathLike[str] | None = None
) -> CacheReader | None:
    """The cache of a manifest, None if it has none; CacheError if it is stale (the manifest changed)."""
    manifest_file = Path(manifest_file)
    npy = Path(cache_file) if cache_file else cache_files(manifest_file)[0]
    sidecar = npy.with_suffix(".json")
    if not npy.is_file() or not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        size, count = int(meta["size"]), int(meta["count"])
    except (ValueError, KeyError, TypeError) as err:
        raise CacheError(f"{sidecar}: unreadable cache metadata ({err})") from None
    rebuild = "rebuild it (agebench prepare ... --cache-size PX, or agebench.data.cache.build_cache)"
    if meta.get("version") != CACHE_VERSION:
        raise CacheError(f"{npy}: cache format {meta.get('version')} is not {CACHE_VERSION}; {rebuild}")
    paths = _manifest_paths(manifest_file)
    if len(paths) != count or paths_sha256(paths) != meta.get("paths_sha256"):
        raise CacheError(f"{npy}: stale cache, built for other paths (or order) than {manifest_file}; {rebuild}")
    crops = crops_file(manifest_file)
    current = file_sha256(crops) if crops.is_file() else None
    if current != meta.get("crops_sha256"):
        raise CacheError(f"{npy}: stale cache, {crops.name} changed since it was built; {rebuild}")
    array = np.load(npy, mmap_mode="r")
    if array.shape != (count, size, size, 3) or array.dtype != np.uint8:
        raise CacheError(f"{npy}: shape {array.shape} {array.dtype}, expected ({count}, {size}, {size}, 3) uint8")
    return CacheReader(npy, paths, size)


# -- building -------------------------------------------------------------------------------------------------

_OUT: dict[str, np.ndarray] = {}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one decode per process; pool parallelism is enough


def _fill(task: tuple[str, list[tuple[int, str, Quad | None]], int, CropFn]) -> int:
    """Write crops into rows of the output memmap; opened once per process."""
    out_file, items, size, crop_fn = task
    if out_file not in _OUT:
        _OUT[out_file] = np.load(out_file, mmap_mode="r+")
    out = _OUT[out_file]
    for i, path, quad in items:
        try:
            image = crop_fn(Path(path), quad, size)
        except ImageDecodeError as err:
            raise UserError(
                f"manifest row {i + 2}: {path}: {err.kind} image ({err.detail}); "
                "`agebench audit --decode MANIFEST` lists every bad image"
            ) from None
        except OSError as err:
            raise UserError(f"manifest row {i + 2}: {path}: cannot read image ({err})") from None
        if image.shape != (size, size, 3) or image.dtype != np.uint8:
            raise ValueError(f"crop_fn returned {image.shape} {image.dtype} for {path}, expected ({size}, {size}, 3)")
        out[i] = image
    out.flush()
    return len(items)


def build_cache(
    manifest: Manifest | str | os.PathLike[str],
    out_file: str | os.PathLike[str] | None = None,
    size: int = 224,
    crop_fn: CropFn | None = None,
    workers: int | None = None,
    *,
    crops: Mapping[str, Quad | None] | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CacheReader:
    """Crop every manifest image to size x size into a uint8 .npy (rows in manifest order) plus its sidecar.

    crop_fn(image_path, quad, size) -> RGB uint8; default: the quad from ``crops`` (or the manifest's crops
    sidecar), else the image's centre square. A picklable (module-level) crop_fn is needed when workers > 0.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, root, required_splits=())
    if size < 8:
        raise UserError(f"--cache-size {size}: expected at least 8 pixels")
    sidecar_crops = crops_file(manifest.file)
    crops_sha = None  # the hash open_cache compares: of the sidecar, when the crops came from it
    if crops is None and sidecar_crops.is_file():
        crops = {p: q for p, (_, q) in read_crops(sidecar_crops).items()}
        crops_sha = file_sha256(sidecar_crops)
    crops = crops or {}
    npy = Path(out_file) if out_file else cache_files(manifest.file)[0]
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.stem}.tmp.npy")
    n = len(manifest.records)
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)).flush()
    items = [(i, str(manifest.image_path(r)), crops.get(r.path)) for i, r in enumerate(manifest.records)]
    chunk = 64
    tasks = [(str(tmp), items[s : s + chunk], size, crop_fn or load_crop) for s in range(0, n, chunk)]
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    try:
        _run(tasks, n, workers, progress, f"cache {size}px")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _OUT.pop(str(tmp), None)
    os.replace(tmp, npy)
    meta = {
        "version": CACHE_VERSION,
        "array": npy.name,
        "size": size,
        "count": n,
        "layout": "[N, size, size, 3] uint8 RGB, row i = manifest row i",
        "manifest": manifest.file.name,
        "manifest_sha256": manifest.sha256(),
        "paths_sha256": paths_sha256([r.path for r in manifest.records]),
        "crops_sha256": crops_sha,
    }
    sidecar = npy.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return CacheReader(npy, [r.path for r in manifest.records], size)


def link_cache(source_manifest: str | os.PathLike[str], manifest: Manifest) -> CacheReader | None:
    """Give ``manifest`` the cache of another manifest with the same paths, order and crops (a hard link, else a
    copy), with its own sidecar; None when they differ or the source has no valid cache. Folds of one protocol
    that only move images between splits (leave-one-person-out) share their pixels this way."""
    import shutil

    source = open_cache(source_manifest)
    crops = crops_file(manifest.file)
    source_crops = crops_file(Path(source_manifest))
    same_crops = (crops.is_file(), source_crops.is_file()) == (False, False) or (
        crops.is_file() and source_crops.is_file() and file_sha256(crops) == file_sha256(source_crops)
    )
    if source is None or source.paths != [r.path for r in manifest.records] or not same_crops:
        return None
    npy, sidecar = cache_files(manifest.file)
    npy.unlink(missing_ok=True)
    try:
        os.link(source.file, npy)
    except OSError:
        shutil.copyfile(source.file, npy)
    meta = json.loads(source.file.with_suffix(".json").read_text(encoding="utf-8"))
    meta.update(manifest=manifest.file.name, manifest_sha256=manifest.sha256(), linked_from=str(source.file))
    sidecar.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return open_cache(manifest.file)


def _run(tasks: list, total: int, workers: int, progress: bool, label: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task(label, total=total)
        if workers <= 1:
            for task in tasks:
                bar.advance(job, _fill(task))
            return
        import multiprocessing as mp

        from agebench.data.images import fork_safe_opencv

        with fork_safe_opencv(), mp.get_context().Pool(workers, initializer=_init_worker) as pool:
            for done in pool.imap_unordered(_fill, tasks):
                bar.advance(job, done)
