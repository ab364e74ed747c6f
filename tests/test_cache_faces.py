"""Face crops (quad warps, detector policy) and the uint8 crop cache (values, staleness, worker safety)."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_image_set
from test_sources import make_cacd

from agebench.data import faces
from agebench.data.cache import CacheError, build_cache, cache_files, open_cache
from agebench.data.images import read_rgb
from agebench.data.manifest import load_manifest, write_manifest
from agebench.data.prepare import prepare
from agebench.errors import UserError


@pytest.fixture
def pattern() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def _box(x: float, y: float, side: float) -> faces.Quad:
    return (x, y, x + side, y, x + side, y + side, x, y + side)


def test_upright_quad_inside_the_image_is_the_plain_slice(pattern: np.ndarray) -> None:
    assert np.array_equal(faces.warp_quad(pattern, _box(10, 5, 20), 20), pattern[5:25, 10:30])


def test_rotated_quad_gives_the_rotated_slice(pattern: np.ndarray) -> None:
    x0, y0, s = 10, 5, 20  # top-left corner of the face lies at the slice's top-right: a 90 degree turn
    quad = (x0 + s, y0, x0 + s, y0 + s, x0, y0 + s, x0, y0)
    assert np.array_equal(faces.warp_quad(pattern, quad, s), np.rot90(pattern[y0 : y0 + s, x0 : x0 + s], 1))


def test_quad_outside_the_image_is_padded(pattern: np.ndarray) -> None:
    quad = _box(-5, -3, 20)
    replicate = faces.warp_quad(pattern, quad, 20)
    constant = faces.warp_quad(pattern, quad, 20, border="constant")
    assert np.array_equal(replicate[3:, 5:], pattern[:17, :15])
    assert np.array_equal(replicate[:3, 5:], np.repeat(pattern[:1, :15], 3, axis=0))
    assert np.array_equal(replicate[3:, :5], np.repeat(pattern[:17, :1], 5, axis=1))
    assert not constant[:3].any() and not constant[:, :5].any()
    assert np.array_equal(constant[3:, 5:], pattern[:17, :15])


def test_large_downscale_averages_instead_of_aliasing() -> None:
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: point sampling would give all-black or all-white
    out = faces.warp_quad(stripes, _box(0, 0, 400), 20)
    assert np.abs(out.astype(int) - 127).max() <= 2


def test_box_quad_margin_and_centre_square() -> None:
    assert faces.box_quad(10, 20, 30, 40, margin=0.25) == _box(-5, 10, 60)  # square on the centre
    assert faces.centre_quad(30, 40) == _box(5, 0, 30)
    assert faces.expand_quad(_box(0, 0, 10), 0.5) == _box(-5, -5, 20)
    assert faces.parse_quad(faces.format_quad(_box(1.5, 2, 3))) == _box(1.5, 2, 3)


def test_detector_specs_and_clear_errors(tmp_path: Path, monkeypatch) -> None:
    assert str(faces.DetectorSpec.parse("haar")) == "haar"
    with pytest.raises(UserError, match="model file not found"):
        faces.DetectorSpec.parse(f"yunet:{tmp_path / 'face_detection_yunet.onnx'}")
    with pytest.raises(UserError, match="expected none, haar, mtcnn or yunet:PATH.onnx"):
        faces.DetectorSpec.parse("retinaface")
    with pytest.raises(UserError, match="expected none, haar, mtcnn or yunet:PATH.onnx"):
        faces.DetectorSpec.parse("haar:extra.xml")
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path / "none") + "/")
    with pytest.raises(UserError, match="ships no Haar cascade"):
        faces.haar_cascade_file()


def test_images_without_a_face_are_kept_with_a_centre_crop_and_listed(tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw", size=(30, 40))  # noise: the Haar cascade finds no face in it
    result = prepare("cacd", raw, tmp_path / "out", face_detector="haar", workers=1, progress=False, cache_size=12)
    assert result.report["counts"]["no_face"] == 40 == result.report["counts"]["images_in_manifest"]
    assert len(result.report["faces"]["no_face"]) == 40
    crops = faces.read_crops(result.manifest.with_name("manifest.crops.csv"))
    assert all(face == "no_face" and quad == _box(5, 0, 30) for face, quad in crops.values())
    assert "No face found (kept, centre square) (40)" in (tmp_path / "out" / "report.md").read_text()


# -- the cache --------------------------------------------------------------------------------------------------


def test_cache_rows_equal_the_crops(tmp_path: Path) -> None:
    manifest = load_manifest(make_image_set(tmp_path, n=10, size=40), required_splits=())
    quads = {manifest.records[0].path: _box(-4, 2, 30)}
    reader = build_cache(manifest, size=24, workers=2, crops=quads, progress=False)
    assert reader.file == cache_files(manifest.file)[0]
    again = open_cache(manifest.file)
    for i, r in enumerate(manifest.records):
        expected = faces.crop(read_rgb(manifest.image_path(r)), quads.get(r.path), 24)
        assert np.array_equal(again.get(r.path), expected)
        assert np.array_equal(again.get(i), expected)
    assert again.get(0).dtype == np.uint8 and again.get(0).shape == (24, 24, 3)
    assert np.load(reader.file).shape == (10, 24, 24, 3)


def test_open_cache_is_none_without_a_cache(image_set: Path) -> None:
    assert open_cache(image_set) is None


def test_reordered_manifest_makes_the_cache_stale(image_set: Path) -> None:
    build_cache(image_set, size=16, workers=0, progress=False)
    rows = [
        {"path": r.path, "age": r.age, "subject_id": r.subject_id, "split": r.split}
        for r in reversed(load_manifest(image_set).records)
    ]
    write_manifest(rows, image_set)
    with pytest.raises(CacheError, match="stale cache"):
        open_cache(image_set)


def test_changed_crops_make_the_cache_stale(tmp_path: Path) -> None:
    raw = make_cacd(tmp_path / "raw", size=(30, 30))
    result = prepare("cacd", raw, tmp_path / "out", face_detector="haar", workers=0, progress=False, cache_size=8)
    assert open_cache(result.manifest) is not None
    crops_file = result.manifest.with_name("manifest.crops.csv")
    crops_file.write_text(crops_file.read_text().replace("no_face,0.00 0.00", "no_face,1.00 0.00", 1))
    with pytest.raises(CacheError, match="manifest.crops.csv changed"):
        open_cache(result.manifest)
    # preparing again without crops clears the stale sidecars rather than leaving a trap for training
    again = prepare("cacd", raw, tmp_path / "out", face_detector="none", workers=0, progress=False)
    assert open_cache(again.manifest) is None and not crops_file.exists()
    assert sorted(again.report["removed_stale_files"]) == [
        "manifest.cache.json",
        "manifest.cache.npy",
        "manifest.crops.csv",
    ]


def test_reader_pickles_without_its_memmap_and_reopens_lazily(image_set: Path) -> None:
    reader = build_cache(image_set, size=16, workers=0, progress=False)
    first = reader.get(0)
    assert reader._array is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._array is None
    assert np.array_equal(clone.get(0), first)


def test_reader_works_in_dataloader_workers(image_set: Path) -> None:
    import torch
    from torch.utils.data import DataLoader, Dataset

    reader = build_cache(image_set, size=16, workers=0, progress=False)
    paths = list(reader.paths)

    class Items(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(reader.get(paths[i]))

    batches = list(DataLoader(Items(), batch_size=4, num_workers=2))
    got = torch.cat(batches).numpy()
    assert np.array_equal(got, np.stack([reader.get(i) for i in range(len(paths))]))


def test_mtcnn_prepare_aligns_found_faces_and_counts_none_and_several(tmp_path: Path) -> None:
    from agebench.data.synthetic import render_with_landmarks
    from agebench.data.synthetic_faces import sample_traits

    def synthetic(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)  # seeds whose faces MTCNN finds
        image, _, landmarks = render_with_landmarks(sample_traits(rng), 40.0, 160, rng)
        return image, landmarks

    raw = make_cacd(tmp_path / "raw")  # 40 noise images: no face
    names = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.jpg"))
    one, landmarks = synthetic(1)
    cv2.imwrite(str(raw / names[0]), one, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(raw / names[1]), np.hstack([one, synthetic(7)[0]]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    result = prepare("cacd", raw, tmp_path / "out", face_detector="mtcnn", workers=1, progress=False)
    faces_report = result.report["faces"]
    assert faces_report["found"] == 2 and faces_report["aligned"] is True
    assert result.report["counts"]["no_face"] == 38 and result.report["counts"]["several_faces"] == 1
    assert faces_report["several_faces"] == [names[1]]
    crops = faces.read_crops(result.manifest.with_name("manifest.crops.csv"))
    assert crops[names[0]][0] == crops[names[1]][0] == "mtcnn"
    # The aligned quad of the single face holds its five landmarks and is tilted like the face (not an upright box).
    quad = np.asarray(crops[names[0]][1]).reshape(4, 2)
    inside = cv2.pointPolygonTest(quad.astype(np.float32).reshape(-1, 1, 2), tuple(map(float, landmarks[2])), False)
    assert inside > 0
    eye_tilt = np.degrees(np.arctan2(*(landmarks[1] - landmarks[0])[::-1]))
    top_tilt = np.degrees(np.arctan2(*(quad[1] - quad[0])[::-1]))
    assert abs(top_tilt - eye_tilt) < 5
    # The two-face image takes the larger, more central face: the crop sits over one face, not between them.
    two = np.asarray(crops[names[1]][1]).reshape(4, 2)
    centre_x = two.mean(axis=0)[0]
    assert min(abs(centre_x - 84), abs(centre_x - 242)) < 25  # the faces' centres; the seam is at 160
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Several faces found (the largest and most central taken) (1)" in text and "aligned by 5 landmarks" in text
