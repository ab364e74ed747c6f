"""AgeDataModule: decoding, reproducible augmentation, and evaluation loaders that never repeat a sample."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from agebench.data import datamodule as dm_mod
from agebench.data.datamodule import AgeDataModule, EpochSampler
from agebench.data.images import read_rgb
from agebench.data.manifest import write_manifest
from agebench.errors import UserError


def test_decoding_gives_rgb_for_bgr_gray_and_alpha(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 8), 77, np.uint8))
    bgra = np.dstack([bgr, np.full((8, 8), 10, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    red = read_rgb(tmp_path / "red.png")
    assert red.shape == (8, 8, 3) and red[0, 0].tolist() == [200, 0, 0]
    assert read_rgb(tmp_path / "gray.png")[0, 0].tolist() == [77, 77, 77]
    assert read_rgb(tmp_path / "alpha.png")[0, 0].tolist() == [200, 0, 0]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.jpg"):
        read_rgb(tmp_path / "bad.jpg")


def test_batches_have_the_documented_keys_and_shapes(image_set):
    dm = AgeDataModule(image_set, img_size=32, batch_size=4, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "age", "index", "path"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["age"].dtype == torch.float32 and len(batch["path"]) == 4


def test_a_cache_smaller_than_the_training_size_is_not_upsampled(image_set, capsys):
    from agebench.data.cache import build_cache

    build_cache(image_set, size=16, workers=0, progress=False)
    small = AgeDataModule(image_set, img_size=16, num_workers=0)
    small.setup()
    assert small.datasets["train"].cache is not None and capsys.readouterr().err == ""
    big = AgeDataModule(image_set, img_size=32, num_workers=0)
    big.setup()
    assert big.datasets["train"].cache is None
    assert "16 px crops, smaller than img_size 32: reading the images instead" in capsys.readouterr().err


def test_prepare_data_assigns_no_state(image_set):
    dm = AgeDataModule(image_set, img_size=32)
    before = copy.copy(dm.__dict__)
    dm.prepare_data()
    assert dm.__dict__ == before


def test_augmentation_depends_only_on_seed_epoch_and_sample(image_set):
    dm = AgeDataModule(image_set, img_size=32, seed=3)
    dm.setup()
    ds = dm.datasets["train"]
    a, b = ds[(1, 0)]["image"], ds[(1, 0)]["image"]
    assert torch.equal(a, b)
    assert any(not torch.equal(ds[(i, 0)]["image"], ds[(i, 1)]["image"]) for i in range(len(ds)))
    other = AgeDataModule(image_set, img_size=32, seed=4)
    other.setup()
    assert any(not torch.equal(ds[(i, 0)]["image"], other.datasets["train"][(i, 0)]["image"]) for i in range(len(ds)))


def test_worker_count_does_not_change_batches(image_set):
    def batches(workers: int) -> list[torch.Tensor]:
        dm = AgeDataModule(image_set, img_size=32, batch_size=3, num_workers=workers, seed=1)
        return [b["image"] for b in dm.train_dataloader()]

    assert all(torch.equal(x, y) for x, y in zip(batches(0), batches(2), strict=True))


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_eval_sampler_shards_without_padding_or_repeats(monkeypatch, world):
    seen = []
    for rank in range(world):
        monkeypatch.setattr(dm_mod, "_dist_info", lambda rank=rank: (rank, world))
        sampler = EpochSampler(11, shuffle=False)
        items = [i for i, _ in sampler]
        assert len(items) == len(sampler)
        seen += items
    assert sorted(seen) == list(range(11))


def test_train_sampler_reshuffles_each_epoch_reproducibly():
    s = EpochSampler(20, shuffle=True, seed=0)
    first = [i for i, _ in s]
    s.set_epoch(1)
    second = [i for i, e in s]
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    s2 = EpochSampler(20, shuffle=True, seed=0)
    s2.set_epoch(1)
    assert [i for i, _ in s2] == second


def test_test_loader_yields_each_test_image_once(image_set):
    dm = AgeDataModule(image_set, img_size=32, batch_size=2)
    paths = [p for b in dm.test_dataloader() for p in b["path"]]
    expected = [r.path for r in dm.manifest.split("test")]
    assert sorted(paths) == sorted(expected) and len(set(paths)) == len(paths)


def test_leaky_manifest_is_refused_unless_allowed(tmp_path, image_set):
    rows = [
        {"path": r, "age": 20 + i, "subject_id": "same", "split": s}
        for i, (r, s) in enumerate([("img/0/000.jpg", "train"), ("img/1/001.jpg", "val"), ("img/2/002.jpg", "test")])
    ]
    leaky = write_manifest(rows, image_set.parent / "leaky.csv")
    with pytest.raises(UserError, match="allow_leaky_splits"):
        AgeDataModule(leaky).setup()
    dm = AgeDataModule(leaky, img_size=32, allow_leaky_splits=True)
    dm.setup()
    assert dm.leaky
