"""Face crops: a protocol's (possibly rotated) box, an OpenCV detector, or the image's centre square.

Every crop is a quad: 8 numbers, the (x, y) of its top-left, top-right, bottom-right and bottom-left corners in
continuous pixel coordinates (pixel i spans [i, i+1)). One affine warp turns any quad, upright or rotated,
inside the image or reaching past its edge, into an upright square; outside the image the border is
replicated (or a constant). Images where a detector finds no face keep the image's centre square and are
flagged ``no_face`` (listed in the prepare report), so counts still match the published ones.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agebench.data.images import read_rgb
from agebench.errors import UserError

Quad = tuple[float, ...]
DETECTOR_MARGIN = 0.25  # default margin around a detector box (fraction of its side, each side)
BBOX_MARGIN = 0.0  # default margin around a protocol's box: the benchmark's box as given
BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


def box_quad(x: float, y: float, w: float, h: float, margin: float = 0.0) -> Quad:
    """Upright square quad centred on a box, its side = max(w, h) * (1 + 2 * margin)."""
    side = max(w, h) * (1 + 2 * margin)
    cx, cy, r = x + w / 2, y + h / 2, side / 2
    return (cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r)


def expand_quad(quad: Quad, margin: float) -> Quad:
    """Grow a quad about its centre by ``margin`` of its side on each side (rotation kept)."""
    if not margin:
        return tuple(float(v) for v in quad)
    pts = np.asarray(quad, np.float64).reshape(4, 2)
    centre = pts.mean(axis=0)
    return tuple(float(v) for v in (centre + (pts - centre) * (1 + 2 * margin)).ravel())


def centre_quad(height: int, width: int) -> Quad:
    """The largest centred square: what a pre-cropped image or a no-face image is reduced to."""
    return box_quad(
        (width - min(height, width)) / 2,
        (height - min(height, width)) / 2,
        min(height, width),
        min(height, width),
    )


def format_quad(quad: Quad | None) -> str:
    """Fixed 2-decimal text so the same quad always gives the same bytes (crops file hash)."""
    return "" if quad is None else " ".join(f"{v:.2f}" for v in quad)


def parse_quad(text: str) -> Quad | None:
    text = text.strip()
    if not text:
        return None
    values = tuple(float(v) for v in text.split())
    if len(values) != 8:
        raise ValueError(f"crop {text!r}: expected 8 numbers")
    return values


def warp_quad(image: np.ndarray, quad: Quad, size: int, border: str = "replicate") -> np.ndarray:
    """Warp the quad to an upright ``size`` x ``size`` image (TL -> top-left, TR -> top-right, BL -> bottom-left).

    Large downscales first shrink the image with INTER_AREA, since a bilinear warp alone would alias.
    """
    pts = np.asarray(quad, np.float64).reshape(4, 2)
    side = max(np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[3] - pts[0]))
    factor = side / size
    if factor > 2:
        h, w = image.shape[:2]
        new_w, new_h = max(1, round(w / factor)), max(1, round(h / factor))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        pts = pts * np.array([new_w / w, new_h / h])
    ex, ey = (pts[1] - pts[0]) / size, (pts[3] - pts[0]) / size
    # dst pixel u (centre u + 0.5) <- src continuous TL + (u + 0.5) ex; warpAffine samples pixel centres at integers.
    offset = pts[0] + 0.5 * (ex + ey) - 0.5
    matrix = np.array([[ex[0], ey[0], offset[0]], [ex[1], ey[1], offset[1]]])
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=BORDERS[border]
    )


def crop(image: np.ndarray, quad: Quad | None, size: int, border: str = "replicate") -> np.ndarray:
    """The crop a cache stores: the quad if given, else the centre square, at size x size."""
    if quad is None:
        quad = centre_quad(*image.shape[:2])
    return warp_quad(image, quad, size, border)


def load_crop(path: str | os.PathLike[str], quad: Quad | None, size: int) -> np.ndarray:
    return crop(read_rgb(path), quad, size)


@dataclass(frozen=True)
class DetectorSpec:
    """Parsed ``--face-detector``: ``none``, ``haar`` or ``yunet:PATH`` (YuNet's .onnx is not shipped)."""

    kind: str
    model: str = ""

    @classmethod
    def parse(cls, text: str) -> DetectorSpec:
        kind, _, model = text.partition(":")
        if kind in ("none", "haar") and not model:
            return cls(kind)
        if kind == "yunet" and model:
            if not os.path.isfile(model):
                raise UserError(
                    f"--face-detector yunet:{model}: model file not found (download face_detection_yunet_*.onnx)"
                )
            return cls(kind, model)
        raise UserError(f"--face-detector {text!r}: expected none, haar or yunet:PATH.onnx")

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}" if self.model else self.kind


def haar_cascade_file() -> str:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(folder or "", "haarcascade_frontalface_default.xml")
    if not folder or not os.path.isfile(path) or not hasattr(cv2, "CascadeClassifier"):
        raise UserError(
            f"OpenCV {cv2.__version__} ships no Haar cascade (cv2.data.haarcascades): install "
            "opencv-python-headless<5, or use --face-detector yunet:PATH.onnx or none"
        )
    return path


class FaceDetector:
    """Finds the main face of an image (largest Haar box, or most confident YuNet box), or None."""

    MAX_SIDE = 640  # detect on a downscaled copy: faster, and detectors are tuned for such sizes

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        if spec.kind == "haar":
            self._haar = cv2.CascadeClassifier(haar_cascade_file())
        elif spec.kind == "yunet":
            if not hasattr(cv2, "FaceDetectorYN"):
                raise UserError(f"OpenCV {cv2.__version__} has no cv2.FaceDetectorYN (YuNet needs OpenCV >= 4.5.4)")
            self._yunet = cv2.FaceDetectorYN.create(spec.model, "", (320, 320), 0.6, 0.3, 50)

    def detect(self, rgb: np.ndarray) -> tuple[float, float, float, float] | None:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.MAX_SIDE / max(h, w))
        small = (
            cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        )
        if self.spec.kind == "haar":
            gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
            min_side = max(20, min(gray.shape) // 8)
            boxes = self._haar.detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
            if len(boxes) == 0:
                return None
            x, y, bw, bh = max((tuple(b) for b in boxes), key=lambda b: (b[2] * b[3], b))
        elif self.spec.kind == "yunet":
            self._yunet.setInputSize((small.shape[1], small.shape[0]))
            _, faces = self._yunet.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            if faces is None or len(faces) == 0:
                return None
            x, y, bw, bh = max(faces.tolist(), key=lambda f: (f[-1] * f[2] * f[3], f))[:4]
        else:
            return None
        return (x / scale, y / scale, bw / scale, bh / scale)


_DETECTORS: dict[str, FaceDetector] = {}


def detect_quad(path: str | os.PathLike[str], spec: DetectorSpec, margin: float) -> tuple[Quad, bool]:
    """(quad, found) for one image: the detector's box grown by margin, else the centre square (found=False).

    Detectors are built once per process, so this can run in a worker pool.
    """
    key = str(spec)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(spec)
    image = read_rgb(path)
    box = _DETECTORS[key].detect(image)
    if box is None:
        return centre_quad(*image.shape[:2]), False
    return box_quad(*box, margin=margin), True


def crops_file(manifest_file: str | os.PathLike[str]) -> Path:
    """The crops sidecar of a manifest: ``<stem>.crops.csv`` (path, face, crop) next to it.

    Crops live beside the manifest, not in it, so the manifest hash pins labels and splits only and does not
    change with the OpenCV version a detector ran under.
    """
    m = Path(manifest_file)
    return m.with_name(f"{m.stem}.crops.csv")


def write_crops(rows: list[tuple[str, str, Quad | None]], file: str | os.PathLike[str]) -> Path:
    """rows: (path, face, quad) in manifest order; face is given, bbox, haar, yunet or no_face."""
    file = Path(file)
    with open(file, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "face", "crop"])
        for path, face, quad in rows:
            writer.writerow([path, face, format_quad(quad)])
    return file


def read_crops(file: str | os.PathLike[str]) -> dict[str, tuple[str, Quad | None]]:
    out: dict[str, tuple[str, Quad | None]] = {}
    with open(file, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[row["path"]] = (row["face"], parse_quad(row["crop"]))
            except (KeyError, ValueError, TypeError) as err:
                raise UserError(f"{file}:{line}: {err}") from None
    return out
