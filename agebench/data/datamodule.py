"""The shared LightningDataModule: one manifest in, batches of {"image", "age", "index", "path"} out.

Why a custom sampler: it makes shuffling and augmentation a function of (seed, epoch, sample) only, so a run
resumed from a checkpoint, or run with another worker count, sees exactly the same batches; and it shards the
evaluation sets across DDP ranks without padding, so no test image is counted twice.

Bad images met while loading (a file that changed after `agebench audit --decode`): a worker cannot raise a
clean error (PyTorch re-raises it wrapped in a traceback), so the dataset returns a marker, the collate
function moves markers aside, and the loader acts on them in the main process: ``on_bad_image="error"``
raises a one-line UserError naming the file and its manifest row; ``"skip"`` drops the image, warns once
and records it in :attr:`AgeDataModule.skipped_images` (fit writes them to metrics.json).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from agebench.data import transforms as T
from agebench.data.images import ImageDecodeError, read_rgb
from agebench.data.manifest import Manifest, Record, load_manifest
from agebench.errors import UserError


@dataclass
class AugmentConfig:
    scale_min: float = 0.8
    hflip: float = 0.5
    color_jitter: float = 0.2


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, epoch) pairs for this rank.

    train: a permutation seeded by (seed, epoch), padded to a multiple of the world size (training may repeat).
    eval: the indices in order, rank r takes r, r+W, r+2W... with no padding (evaluation never repeats).
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, pad: bool = False, shard: bool = True) -> None:
        self.n, self.shuffle, self.seed, self.pad, self.shard = n, shuffle, seed, pad, shard
        self.epoch = 0

    def _rank_world(self) -> tuple[int, int]:
        return _dist_info() if self.shard else (0, 1)

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = epoch

    def _indices(self) -> list[int]:
        rank, world = self._rank_world()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and world > 1 and self.n % world:
            order += order[: world - self.n % world]
        return order[rank::world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((i, self.epoch) for i in self._indices())

    def __len__(self) -> int:
        rank, world = self._rank_world()
        total = self.n + ((world - self.n % world) % world if self.pad and world > 1 else 0)
        return len(range(rank, total, world))


class FaceAgeDataset(Dataset):
    """Images of one split. Items are keyed by (index, epoch) so augmentation is reproducible per sample."""

    def __init__(self, manifest: Manifest, records: list[Record], transform, *, seed: int, cache=None) -> None:
        self.manifest, self.records, self.transform, self.seed, self.cache = manifest, records, transform, seed, cache

    def __len__(self) -> int:
        return len(self.records)

    def load_rgb(self, index: int) -> np.ndarray:
        record = self.records[index]
        if self.cache is not None:
            return self.cache.get(record.path)
        return read_rgb(self.manifest.image_path(record))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        record = self.records[index]
        try:
            rgb = self.load_rgb(index)
        except ImageDecodeError as err:  # acted on in the main process, see the module docstring
            bad = {"path": record.path, "row": record.row, "split": record.split, "kind": err.kind}
            return {BAD_KEY: {**bad, "detail": err.detail}}
        self.transform.set_random_seed(T.sample_seed(self.seed, epoch, index))
        image = self.transform(image=rgb)["image"]
        return {
            "image": T.to_chw_tensor(image),
            "age": torch.tensor(record.age, dtype=torch.float32),
            "index": index,
            "path": record.path,
        }


BAD_KEY = "bad_images"
ON_BAD_IMAGE = ("error", "skip")


def collate_checked(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate of the good samples; bad-image markers go to ``batch["bad_images"]``."""
    good = [s for s in samples if BAD_KEY not in s]
    bad = [s[BAD_KEY] for s in samples if BAD_KEY in s]
    batch = default_collate(good) if good else {"index": torch.zeros(0, dtype=torch.long)}
    batch[BAD_KEY] = bad
    return batch


def bad_image_where(bad: dict[str, Any]) -> str:
    """Which image and what is wrong with it, for the warning (skip) and the error (error)."""
    return f"manifest row {bad['row']}: {bad['path']} ({bad['split']} split): {bad['kind']} image ({bad['detail']})"


def bad_image_message(bad: dict[str, Any]) -> str:
    return (
        f"{bad_image_where(bad)}; fix or remove it (`agebench audit --decode` lists all), or set data.on_bad_image=skip"
    )


class CheckedLoader(DataLoader):
    """A DataLoader that acts on bad-image markers in the main process and never yields an empty batch."""

    def __init__(self, *args: Any, on_bad_image: str, skipped: dict[str, dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, collate_fn=collate_checked, **kwargs)
        self.on_bad_image, self.skipped = on_bad_image, skipped

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in super().__iter__():
            for bad in batch.pop(BAD_KEY):
                if self.on_bad_image == "error":
                    raise UserError(bad_image_message(bad))
                if bad["path"] not in self.skipped:
                    self.skipped[bad["path"]] = bad
                    print(f"agebench: warning: skipped {bad_image_where(bad)}", file=sys.stderr)
            if len(batch["index"]):
                yield batch


class AgeDataModule(pl.LightningDataModule):
    """Reads a manifest (validated, leak-checked) and serves train/val/test/predict loaders.

    ``allow_leaky_splits`` must be set explicitly to train on a manifest whose splits share subjects; the
    module then reports ``leaky = True`` so results can say so.
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        *,
        img_size: int = 224,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        augment: AugmentConfig | None = None,
        crop_pct: float = 1.0,
        allow_leaky_splits: bool = False,
        use_cache: bool = True,
        pin_memory: bool | None = None,
        on_bad_image: str = "error",
        required_splits: tuple[str, ...] = ("train", "val", "test"),
    ) -> None:
        super().__init__()
        if on_bad_image not in ON_BAD_IMAGE:
            raise UserError(f"data.on_bad_image={on_bad_image!r}: expected one of {', '.join(ON_BAD_IMAGE)}")
        self.on_bad_image = on_bad_image
        self.required_splits = required_splits  # a cross-dataset target needs only its test split
        self._skipped: dict[str, dict[str, Any]] = {}
        self.manifest_file = Path(manifest)
        self.root = Path(root) if root is not None else None
        self.img_size, self.batch_size = img_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.augment = augment or AugmentConfig()
        self.crop_pct, self.allow_leaky_splits, self.use_cache = crop_pct, allow_leaky_splits, use_cache
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.manifest: Manifest | None = None
        self.leaks: dict[str, list[str]] = {}
        self.datasets: dict[str, FaceAgeDataset] = {}

    def prepare_data(self) -> None:
        """Runs on one process only: checks the manifest is there, assigns no state (Lightning's rule)."""
        if not self.manifest_file.is_file():
            raise UserError(f"{self.manifest_file}: manifest not found (run `agebench synth` or `agebench prepare`)")

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is None:
            self.manifest = load_manifest(self.manifest_file, self.root, required_splits=self.required_splits)
            self.leaks = self.manifest.leaks()
            if self.leaks and not self.allow_leaky_splits:
                some = ", ".join(list(self.leaks)[:5])
                raise UserError(
                    f"{self.manifest_file}: {len(self.leaks)} subject(s) appear in more than one split ({some}...); "
                    "set data.allow_leaky_splits=true to train anyway (results will be labelled leaky)"
                )
            cache = self._open_cache()
            aug = self.augment
            train_tf = T.train_transform(
                self.img_size, seed=self.seed, scale_min=aug.scale_min, hflip=aug.hflip, color_jitter=aug.color_jitter
            )
            for split in ("train", "val", "test"):
                tf = train_tf if split == "train" else T.eval_transform(self.img_size, crop_pct=self.crop_pct)
                self.datasets[split] = FaceAgeDataset(
                    self.manifest, self.manifest.split(split), tf, seed=self.seed, cache=cache
                )

    def _open_cache(self):
        if not self.use_cache:
            return None
        from agebench.data.cache import open_cache

        cache = open_cache(self.manifest_file)
        if cache is not None and cache.size < self.img_size:  # upsampling a small cache would blur every image
            print(
                f"agebench: warning: {cache.file} holds {cache.size} px crops, smaller than img_size "
                f"{self.img_size}: reading the images instead (rebuild the cache at >= {self.img_size} px)",
                file=sys.stderr,
            )
            return None
        return cache

    @property
    def leaky(self) -> bool:
        return bool(self.leaks)

    @property
    def skipped_images(self) -> list[dict[str, Any]]:
        """Images dropped under ``on_bad_image="skip"`` so far (each once), in the order they were met."""
        return sorted(self._skipped.values(), key=lambda b: b["row"])

    def train_ages(self) -> np.ndarray:
        self.setup()
        return np.array([r.age for r in self.datasets["train"].records], dtype=np.float64)

    def _loader(self, split: str, *, train: bool, shard: bool = True) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        sampler = EpochSampler(len(dataset), shuffle=train, seed=self.seed, pad=train, shard=shard)
        return CheckedLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=train and len(dataset) > self.batch_size,
            persistent_workers=False,
            on_bad_image=self.on_bad_image,
            skipped=self._skipped,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self, shard: bool = True) -> DataLoader:
        """``shard=False``: the whole test split on this process, as the final evaluation uses it."""
        return self._loader("test", train=False, shard=shard)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
