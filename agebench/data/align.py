"""Five-point face alignment: a similarity transform (rotation, uniform scale, shift) of the landmarks onto a template.

Why a similarity and not a full affine: five noisy points would let an affine shear the face, and age cues
(proportions, fold shapes) must not be distorted. The template is the ArcFace/InsightFace 112 x 112 one
(eyes, nose tip, mouth corners, in the image's left-to-right order), the usual choice of RetinaFace-aligned
benchmarks. The result is a *quad* (the crop's four corners in the source image, see
:mod:`agebench.data.faces`), so an aligned crop is stored, cached and warped like any detector box.

Coordinates are continuous: pixel i spans [i, i + 1), as everywhere in :mod:`agebench.data.faces`.
"""

from __future__ import annotations

import numpy as np

from agebench.data.warp import Quad, warp_quad

# ArcFace's 5-point template for a 112 x 112 crop: left eye, right eye, nose tip, left and right mouth corner
# (left/right as seen in the image).
TEMPLATE_SIZE = 112
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def template(size: float = TEMPLATE_SIZE, margin: float = 0.0) -> np.ndarray:
    """The five template points in a ``size`` crop that adds ``margin`` of the template's side on each side."""
    if not -0.4 < margin <= 2:
        raise ValueError(f"margin {margin}: expected -0.4 < margin <= 2")
    unit = (TEMPLATE_112 / TEMPLATE_SIZE + margin) / (1 + 2 * margin)
    return unit * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` [N, 2] onto ``dst``: a 2 x 3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity needs two [N >= 2, 2] point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ flip @ vt
    var = (s**2).sum() / len(src)
    if var == 0:
        raise ValueError("similarity: the source points coincide")
    scale = float((sig * np.diag(flip)).sum() / var)
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [N, 2] through a 2 x 3 affine matrix."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(matrix[:, :2])
    return np.hstack([a, -a @ matrix[:, 2:]])


def aligned_quad(landmarks: np.ndarray, margin: float = 0.0) -> Quad:
    """The source-image quad (TL, TR, BR, BL) whose upright square puts ``landmarks`` on the template.

    Independent of the output size: warp it to any size with :func:`agebench.data.warp.warp_quad`.
    """
    to_unit = similarity(landmarks, template(1.0, margin))
    corners = apply(invert(to_unit), np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64))
    return tuple(float(v) for v in corners.ravel())


def align(
    image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE, margin: float = 0.0, border: str = "replicate"
) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of ``image`` (RGB uint8) for its five ``landmarks`` [5, 2]."""
    return warp_quad(image, aligned_quad(landmarks, margin), size, border)


def quad_matrix(quad: Quad, size: float) -> np.ndarray:
    """The 2 x 3 map from source coordinates to the ``size`` crop that :func:`warp_quad` makes of ``quad``."""
    pts = np.asarray(quad, np.float64).reshape(4, 2)
    return affine_from_3(pts[[0, 1, 3]], np.array([[0, 0], [size, 0], [0, size]], np.float64))


def affine_from_3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The affine map of three points onto three (a quad's TL, TR, BL onto the crop's corners)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T
