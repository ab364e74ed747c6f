"""A crop's quad and its warp to an upright square: the geometry :mod:`agebench.data.faces` (detector and protocol
boxes) and :mod:`agebench.data.align` (landmark alignment) share.

A quad is 8 numbers, the (x, y) of its top-left, top-right, bottom-right and bottom-left corners in continuous
pixel coordinates (pixel i spans [i, i+1)).
"""

from __future__ import annotations

import cv2
import numpy as np

Quad = tuple[float, ...]
BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


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
