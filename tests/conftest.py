"""Shared fixtures: small data sets that the tests make themselves (no download, no network)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from agebench.data.manifest import write_manifest  # noqa: E402


def make_image_set(root: Path, n: int = 12, size: int = 40, seed: int = 0, subjects: int = 6) -> Path:
    """n small JPEGs whose brightness follows the age, split subject-exclusively; returns the manifest path."""
    rng = np.random.default_rng(seed)
    rows = []
    splits = ["train", "train", "train", "train", "val", "test"]
    for i in range(n):
        subject = i % subjects
        age = float(10 + (5 * i) % 80)
        image = np.full((size, size, 3), min(255, int(age * 2)), np.uint8)
        image[: size // 2] = rng.integers(0, 255, (size // 2, size, 3), dtype=np.uint8)
        rel = f"img/{subject}/{i:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), image)
        rows.append({"path": rel, "age": age, "subject_id": f"s{subject}", "split": splits[subject % len(splits)]})
    return write_manifest(rows, root / "manifest.csv")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core box, OpenMP threads spin-waiting on each other are 5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_set(tmp_path: Path) -> Path:
    return make_image_set(tmp_path)
