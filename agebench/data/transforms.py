"""albumentations pipelines: train (random-resized-crop, flip, light colour jitter) and eval (resize, centre crop).

Each pipeline is built with ``seed=`` and the dataset reseeds it per (seed, epoch, sample), so an augmentation
depends only on those three numbers: not on the worker count, the worker a sample lands in, or a resume.
"""

from __future__ import annotations

import hashlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates online at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(
    img_size: int,
    *,
    seed: int,
    scale_min: float = 0.8,
    hflip: float = 0.5,
    color_jitter: float = 0.2,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> A.Compose:
    """Mild augmentation: faces are already cropped, so crops stay large and colours stay natural."""
    steps: list[A.BasicTransform] = [
        A.RandomResizedCrop(size=(img_size, img_size), scale=(scale_min, 1.0), ratio=(0.9, 1.1)),
        A.HorizontalFlip(p=hflip),
    ]
    if color_jitter > 0:
        j = color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j / 2, hue=min(j / 10, 0.5), p=0.8))
    steps.append(A.Normalize(mean=mean, std=std))
    return A.Compose(steps, seed=seed)


def eval_transform(
    img_size: int,
    *,
    crop_pct: float = 1.0,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> A.Compose:
    """Resize the short side to img_size / crop_pct, then centre-crop: deterministic by construction."""
    resize = max(img_size, int(round(img_size / crop_pct)))
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=resize, interpolation=cv2.INTER_AREA),
            A.CenterCrop(height=img_size, width=img_size),
            A.Normalize(mean=mean, std=std),
        ],
        seed=0,
    )


def pixel_transform(img_size: int, *, crop_pct: float = 1.0) -> A.Compose:
    """:func:`eval_transform` without Normalize: the uint8 pixels an exported model takes (it normalises itself)."""
    return A.Compose(eval_transform(img_size, crop_pct=crop_pct).transforms[:-1], seed=0)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index): stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def to_chw_tensor(image: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
