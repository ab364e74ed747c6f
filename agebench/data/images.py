"""Image decoding with OpenCV: always returns RGB uint8 HxWx3, whatever the file holds."""

from __future__ import annotations

import os

import cv2
import numpy as np


class ImageDecodeError(OSError):
    """An image file that OpenCV cannot read (corrupt, truncated or not an image)."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grayscale -> RGB, BGRA -> RGB (alpha dropped), BGR -> RGB, 16-bit -> 8-bit."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError(f"{path}: cannot decode image")
    return to_rgb_uint8(image)
