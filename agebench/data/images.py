"""Image decoding with OpenCV: always returns RGB uint8 HxWx3, whatever the file holds.

OpenCV decodes a truncated JPEG or PNG "successfully": libjpeg fills the missing rows with grey and only
prints a warning. Such an image would be trained on silently, so :func:`decode_image` also checks that the
file's bytes end where their format says they end (JPEG end-of-image marker, PNG IEND chunk, the sizes in
WebP and BMP headers) and rejects images too small to crop or of one constant colour.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

MIN_SIDE = 16  # px; smaller images cannot be cropped and resized meaningfully
BAD_KINDS = ("missing", "empty", "unreadable", "truncated", "too_small", "constant")


class ImageDecodeError(OSError):
    """An image file that cannot be used: ``kind`` is one of :data:`BAD_KINDS`, the message says why."""

    def __init__(self, path: str | os.PathLike[str], kind: str, detail: str) -> None:
        super().__init__(f"{os.fspath(path)}: {detail}")
        self.path, self.kind, self.detail = os.fspath(path), kind, detail

    def __reduce__(self):  # picklable across DataLoader workers and process pools
        return (type(self), (self.path, self.kind, self.detail))


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


def truncation(data: bytes) -> str | None:
    """Why the bytes of a JPEG/PNG/WebP/BMP file are cut short, or None when they look complete.

    Checks the end of the stream as each format defines it: JPEG's EOI marker ``FF D9`` (trailing zero
    padding, which some cameras write, is allowed), PNG's ``IEND`` chunk, the RIFF size of WebP and the file
    size in a BMP header. Other formats are left to the decoder.
    """
    if data[:3] == b"\xff\xd8\xff":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            return "truncated PNG (no IEND chunk)"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if len(data) < int.from_bytes(data[4:8], "little") + 8:
            return "truncated WebP (shorter than its RIFF size)"
    elif data[:2] == b"BM" and len(data) >= 6 and len(data) < int.from_bytes(data[2:6], "little"):
        return "truncated BMP (shorter than its header's file size)"
    return None


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one file: ``kind`` None when usable, else one of :data:`BAD_KINDS`."""

    path: str
    kind: str | None
    detail: str = ""
    height: int = 0
    width: int = 0


def _inspect(path: str | os.PathLike[str], min_side: int | None) -> tuple[np.ndarray | None, ImageCheck]:
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None, ImageCheck(p, "missing", "file not found")
    except OSError as err:
        return None, ImageCheck(p, "unreadable", f"cannot read file ({err.strerror or err})")
    if not raw:
        return None, ImageCheck(p, "empty", "empty file (0 bytes)")
    cut = truncation(raw)
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if cut:  # whether or not OpenCV made a (grey-filled) image of it
        return None, ImageCheck(p, "truncated", cut)
    if image is None:
        return None, ImageCheck(p, "unreadable", "not a decodable image")
    h, w = image.shape[:2]
    if min_side is None:  # integrity only
        return image, ImageCheck(p, None, "", h, w)
    if min(h, w) < min_side:
        return None, ImageCheck(p, "too_small", f"{w}x{h} px, smaller than {min_side} px", h, w)
    if image.size and image.min() == image.max():
        return None, ImageCheck(p, "constant", f"every pixel is {int(image.flat[0])} (blank image)", h, w)
    return image, ImageCheck(p, None, "", h, w)


def check_image(path: str | os.PathLike[str], min_side: int = MIN_SIDE) -> ImageCheck:
    """Decode ``path`` fully and say whether it is usable (see :data:`BAD_KINDS`); never raises."""
    return _inspect(path, min_side)[1]


def decode_image(path: str | os.PathLike[str], min_side: int | None = MIN_SIDE) -> np.ndarray:
    """RGB uint8 HxWx3 of a usable image; :class:`ImageDecodeError` (with its kind) otherwise.

    ``min_side=None`` checks integrity only (missing, empty, unreadable, truncated), not size or content.
    """
    image, verdict = _inspect(path, min_side)
    if image is None:
        raise ImageDecodeError(verdict.path, str(verdict.kind), verdict.detail)
    return to_rgb_uint8(image)


@contextmanager
def fork_safe_opencv() -> Iterator[None]:
    """Wrap the creation and life of a forking process pool: OpenCV's thread pool is not fork-safe, and a child
    forked while the parent's pool has threads hangs at its first parallel cv2 call (seen after a warp or a
    detector ran in the parent). One thread in the parent while the pool lives; the old count after."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The loaders' entry point: a complete, decodable image (:func:`decode_image` integrity checks only).

    Tiny or blank images are a data-quality verdict for ``audit --decode`` and ``prepare``, not a reason to
    stop a training run that was given them.
    """
    return decode_image(path, min_side=None)
