"""Decode every image of a manifest before anyone trains on it: a scraped data set always holds a few
zero-byte, truncated or non-image files, and finding them at epoch 7 wastes the six before.

Used by ``agebench audit --decode``, by ``agebench prepare`` (bad files are left out of the manifest) and
by the crop cache builder. What counts as bad is :func:`agebench.data.images.check_image`'s verdict.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from agebench.data.images import BAD_KINDS, check_image
from agebench.data.manifest import Manifest


@dataclass(frozen=True)
class BadImage:
    """One unusable image with where it sits in the manifest (``row`` is the CSV line, header = 1)."""

    path: str
    kind: str
    detail: str
    row: int = 0
    split: str = ""

    def line(self) -> str:
        where = f"row {self.row}: " if self.row else ""
        return f"{where}{self.path}: {self.kind} ({self.detail})"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[TextIO]:
    """Silence libjpeg/libpng warnings (printed by C code straight to fd 2) while decoding many files.

    Yields a stream on the original stderr for progress bars. Falls back to doing nothing where fd 2 cannot
    be duplicated (e.g. under some notebook kernels).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield sys.stderr
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    stream = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        os.dup2(devnull, 2)
        yield stream
    finally:
        stream.flush()
        os.dup2(saved, 2)
        for fd in (saved, devnull):
            os.close(fd)
        stream.close()


def check_files(
    items: Sequence[tuple[Path, str, int, str]], *, workers: int | None = None, progress: bool = True
) -> list[BadImage]:
    """Decode ``(file, shown path, row, split)`` items in parallel; the bad ones, in input order.

    Threads suffice: OpenCV releases the GIL while it decodes.
    """
    from tqdm.auto import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    bad: list[BadImage] = []
    with quiet_native_stderr() as err, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = pool.map(lambda item: check_image(item[0]), items)
        bar = tqdm(verdicts, total=len(items), desc="decoding", unit="img", file=err, disable=not progress)
        for (_, shown, row, split), verdict in zip(items, bar, strict=True):
            if verdict.kind is not None:
                bad.append(BadImage(shown, verdict.kind, verdict.detail, row, split))
    return bad


def check_manifest_images(manifest: Manifest, *, workers: int | None = None, progress: bool = True) -> list[BadImage]:
    """Every unusable image of ``manifest`` with its row and split."""
    items = [(manifest.image_path(r), r.path, r.row, r.split) for r in manifest.records]
    return check_files(items, workers=workers, progress=progress)


def counts_by_kind(bad: Sequence[BadImage]) -> dict[str, int]:
    """Images per kind of fault, in :data:`BAD_KINDS` order, kinds with none left out."""
    counts = Counter(b.kind for b in bad)
    return {kind: counts[kind] for kind in BAD_KINDS if counts[kind]}
