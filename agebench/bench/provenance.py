"""Where a number came from: code commit, library versions, device, config and data hashes."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """The agebench checkout's commit, with '-dirty' when it has uncommitted changes; 'unknown' outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(*, device: str, precision: str, config_hash: str, manifest_sha256: str, seed: int) -> dict[str, Any]:
    from agebench import __version__

    return {
        "agebench_version": __version__,
        "agebench_commit": git_commit(),
        "torch": _version("torch"),
        "pytorch_lightning": _version("pytorch-lightning"),
        "timm": _version("timm"),
        "python": platform.python_version(),
        "device": device,
        "precision": precision,
        "config_hash": config_hash,
        "manifest_sha256": manifest_sha256,
        "seed": seed,
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
