"""Five-point alignment: the template maps onto itself, and a rotated and scaled face is aligned back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agebench.data import align, faces
from agebench.data.synthetic import render_with_landmarks
from agebench.data.synthetic_faces import sample_traits

SIZE = 112


@pytest.fixture(scope="module")
def synthetic_face() -> tuple[np.ndarray, np.ndarray]:
    """A 160 px synthetic face (RGB) and its five landmarks, as the generator drew them."""
    rng = np.random.default_rng(7)
    image, _, landmarks = render_with_landmarks(sample_traits(rng), 35.0, 160, rng)
    return np.ascontiguousarray(image[..., ::-1]), landmarks


def test_similarity_recovers_a_known_transform_and_the_template_maps_onto_itself():
    angle, scale, shift = np.deg2rad(17), 0.6, np.array([12.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = align.template(SIZE)
    moved = pts @ rot.T + shift
    assert np.allclose(align.similarity(pts, moved), np.hstack([rot, shift[:, None]]), atol=1e-9)
    # A face already in template position: its quad is the crop itself, and its points stay where they are.
    quad = align.aligned_quad(pts / SIZE * 200, margin=0.0)
    assert np.allclose(quad, (0, 0, 200, 0, 200, 200, 0, 200), atol=1e-9)
    matrix = align.quad_matrix(quad, SIZE)
    assert np.abs(align.apply(matrix, pts / SIZE * 200) - pts).max() < 1e-9


def test_margin_shrinks_the_template_about_the_crop_centre():
    plain, wide = align.template(SIZE), align.template(SIZE, margin=0.25)
    assert np.allclose(wide - SIZE / 2, (plain - SIZE / 2) / 1.5)
    with pytest.raises(ValueError, match="margin"):
        align.template(SIZE, margin=3)


def test_a_rotated_and_scaled_face_is_aligned_back(synthetic_face):
    image, landmarks = synthetic_face
    reference = align.align(image, landmarks, SIZE, margin=0.2)
    ref_points = align.apply(align.quad_matrix(align.aligned_quad(landmarks, 0.2), SIZE), landmarks)
    for angle, scale in ((20.0, 0.6), (-15.0, 1.3)):
        h, w = image.shape[:2]
        # OpenCV's warp works on pixel centres: rotate about the centre, then carry the landmarks along.
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
        moved = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved_landmarks = align.apply(m, landmarks - 0.5) + 0.5
        crop = align.align(moved, moved_landmarks, SIZE, margin=0.2)
        points = align.apply(align.quad_matrix(align.aligned_quad(moved_landmarks, 0.2), SIZE), moved_landmarks)
        assert np.abs(points - ref_points).max() < 2.0  # landmark error at 112 px
        # The pixels agree too: the warp, not only the point arithmetic, undoes the rotation. Blurred (sigma 1.5
        # px) so that double interpolation does not count; a crop shifted by 1 px differs by 5-10 grey levels.
        inner = (slice(28, 84), slice(28, 84))
        diff = np.abs(_blur(crop)[inner] - _blur(reference)[inner]).mean()
        assert diff < 2.0, f"rotation {angle}, scale {scale}: mean pixel difference {diff:.2f}"


def _blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)


def test_detector_crop_takes_the_largest_most_central_face_and_counts_the_others():
    found = [
        faces.FoundFace((0, 0, 20, 20), 0.99),  # small, in a corner
        faces.FoundFace((40, 30, 30, 30), 0.95),  # larger and central: taken
        faces.FoundFace((90, 70, 28, 28), 0.99),  # about as large, off-centre
    ]
    assert faces.main_face(found, 120, 120) is found[1]
    assert faces.main_face([], 120, 120) is None
