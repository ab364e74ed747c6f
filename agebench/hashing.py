"""Content hashes of files: the base layer's, so data (manifests, crops) and models (weights) share one reader."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_sha256(pairs: Iterable[tuple[str, float]]) -> str:
    """sha256 of a test split's content: its sorted (path, age to 1e-3) pairs, nothing else.

    Why not the manifest file's sha256: adding a column (a demographic label, a mask) changes the file's bytes but
    not what a model is scored on, so cells and cross targets keyed on this stay paired and done.
    """
    digest = hashlib.sha256()
    for path, age in sorted((p, f"{a:.3f}") for p, a in pairs):
        digest.update(f"{path}\t{age}\n".encode())
    return digest.hexdigest()
