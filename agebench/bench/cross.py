"""Cross-dataset evaluation: a trained cell also predicts other data sets' test splits.

Why: a model that wins only on its own test split may have learned the data set, not age; Paplham & Franc
(CVPR 2024) train on one set and test on seven. Each target is read with its own data settings (root, cache,
crop) at the training image size. Its predictions go to ``predictions.<target>.csv`` (each test image once) and
its metrics under ``cross.<target>`` in metrics.json. Train and target sets that share images or people are
measured and flagged, never silently mixed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agebench.bench.targets import target_settings_hash
from agebench.data.datamodule import AgeDataModule
from agebench.data.manifest import Manifest
from agebench.evaluate import attach_records, metrics_from_predictions, predict, write_predictions

SEEN_SPLITS = ("train", "val")  # what a trained model has seen, or was selected on


def predictions_file(target: str) -> str:
    return f"predictions.{target}.csv"


def overlap(source: Manifest, target: Manifest) -> dict[str, Any]:
    """How much of ``target``'s test split ``source``'s train and validation splits already hold.

    Images are compared by resolved file path; people only when both manifests read the same raw root, since
    subject ids of different data sets are unrelated strings. ``flagged`` when either count is positive.
    """
    seen = [r for r in source.records if r.split in SEEN_SPLITS]
    seen_paths = {os.path.realpath(source.image_path(r)) for r in seen}
    test = target.split("test")
    shared_images = sum(os.path.realpath(target.image_path(r)) in seen_paths for r in test)
    same_root = os.path.realpath(source.root) == os.path.realpath(target.root)
    shared_subjects = 0
    if same_root:
        seen_subjects = {r.subject_id for r in seen if r.subject_id}
        shared_subjects = len({r.subject_id for r in test if r.subject_id in seen_subjects})
    return {
        "shared_images": int(shared_images),
        "shared_subjects": int(shared_subjects),
        "same_root": same_root,
        "flagged": bool(shared_images or shared_subjects),
    }


def target_datamodule(data: dict[str, Any]) -> AgeDataModule:
    """The target's test split as the target's own config reads it (its splits' leaks do not matter here)."""
    dm = AgeDataModule(
        data["manifest"],
        data.get("root"),
        img_size=int(data["img_size"]),
        batch_size=int(data["batch_size"]),
        eval_batch_size=data.get("eval_batch_size"),
        num_workers=int(data.get("num_workers", 0)),
        crop_pct=float(data.get("crop_pct", 1.0)),
        allow_leaky_splits=True,
        use_cache=bool(data.get("use_cache", True)),
        on_bad_image=str(data.get("on_bad_image", "error")),
        required_splits=("test",),  # a test-only manifest (e.g. CVPR24's FG-Net.json) is a valid target
    )
    dm.prepare_data()
    dm.setup("test")
    return dm


def evaluate_target(
    module: torch.nn.Module,
    name: str,
    data: dict[str, Any],
    source: Manifest,
    source_train_ages: np.ndarray,
    out_dir: Path,
    device: torch.device,
    precision: str | None = None,
    tta: str = "none",
) -> dict[str, Any]:
    """Predict one target's whole test split, write its predictions file, and return its ``cross`` record."""
    dm = target_datamodule(data)
    assert dm.manifest is not None
    preds = predict(module, dm.test_dataloader(shard=False), device, precision, tta)
    # subject_id: so the matrix's intervals resample people, as the rows' do; demographic columns: for the report
    attach_records(preds, dm.manifest, dm.datasets["test"].records)
    write_predictions(out_dir / predictions_file(name), preds)
    ages, pred = preds["age"], preds["pred"]
    target_train = np.array([r.age for r in dm.manifest.split("train")], dtype=np.float64)
    return {
        **metrics_from_predictions(ages, pred),
        # The target's own mean predictor (its train mean), as for in-domain cells, and the mean of the data the
        # model was trained on: a model worse than the latter has learned nothing that transfers.
        "baseline_mae": float(np.abs(ages - target_train.mean()).mean()) if len(target_train) else None,
        "source_mean_mae": float(np.abs(ages - source_train_ages.mean()).mean()),
        "overlap": overlap(source, dm.manifest),
        "skipped_images": dm.skipped_images,
        "manifest_sha256": dm.manifest.sha256(),
        "test_split_sha256": dm.manifest.split_sha256("test"),
        "settings_sha256": target_settings_hash(data),
        "predictions": predictions_file(name),
    }
