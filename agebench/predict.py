"""`agebench predict`: a trained run applied to new images, with or without face detection.

The run's best checkpoint and its own eval preprocessing (image size, crop_pct, normalisation) are used, so a
prediction here is what the bench's test evaluation would have made of the same crop. Decoding, detection and
alignment run in DataLoader workers; the main process only runs the network, so a large folder goes at the
loader's speed. Every image gives one row, once: unreadable images and (with ``--detect``) images without a
face get an empty age and a reason, never a guess.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from agebench.atomic import atomic_open
from agebench.data import faces
from agebench.data import transforms as T
from agebench.data.images import ImageDecodeError, read_rgb
from agebench.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
COLUMNS = ["path", "age", "face_box", "n_faces", "error"]


def list_images(items: list[str]) -> list[Path]:
    """Files as given, folders walked (recursively, image suffixes only, sorted); each file once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found = [path]
        else:
            raise UserError(f"{item}: no such file or folder")
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    if not out:
        raise UserError(f"no images in {', '.join(items)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return out


@dataclass
class LoadedRun:
    """What predicting (and exporting) needs of a run: the network and its eval preprocessing."""

    model: Any  # AgeRegressor, eval mode
    name: str
    img_size: int
    crop_pct: float
    checkpoint: Path

    @property
    def resize(self) -> int:
        """The side the eval transform resizes to before its centre crop."""
        return max(self.img_size, int(round(self.img_size / self.crop_pct)))


def load(run_dir: str | os.PathLike[str], model: Any = None) -> LoadedRun:
    """A result cell's best checkpoint (or ``model``, already loaded from it) with its eval preprocessing."""
    from agebench.runs import load_regressor, run_checkpoint

    ckpt, data = run_checkpoint(run_dir)
    model = load_regressor(ckpt) if model is None else model
    config = model.hparams.model_config
    return LoadedRun(model, str(config["name"]), int(config["img_size"]), float(data.get("crop_pct", 1.0)), ckpt)


class ImageFiles(Dataset):
    """Decode, find and align the face (optional), then the run's eval transform; errors become row notes."""

    def __init__(self, paths: list[Path], run: LoadedRun, detector: faces.DetectorSpec | None, margin: float) -> None:
        self.paths, self.detector, self.margin = paths, detector, margin
        self.crop_size = run.resize
        self.transform = T.eval_transform(run.img_size, crop_pct=run.crop_pct)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "error": "", "face_box": "", "n_faces": -1}
        try:
            rgb = read_rgb(self.paths[index])
        except ImageDecodeError as err:
            return {**item, "error": f"{err.kind} image: {err.detail}"}
        except OSError as err:
            return {**item, "error": f"cannot read image ({err})"}
        if self.detector is not None:
            found = faces.detector_for(self.detector).crop_quad(rgb, self.margin)
            item["n_faces"] = found.n_faces
            if not found.found:
                return {**item, "error": "no face found"}
            item["face_box"] = " ".join(f"{v:.1f}" for v in found.face.box)
            rgb = faces.warp_quad(rgb, found.quad, self.crop_size)
        image = self.transform(image=rgb)["image"]
        return {**item, "image": T.to_chw_tensor(image)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [i for i in items if "image" in i]
    return {
        "rows": [{k: v for k, v in i.items() if k != "image"} for i in items],
        "image": torch.stack([i["image"] for i in good]) if good else None,
        "good": [i["index"] for i in good],
    }


@dataclass
class Prediction:
    path: str
    age: float | None
    face_box: str
    n_faces: int | None
    error: str


def predict_images(
    run: LoadedRun,
    paths: list[Path],
    *,
    detector: faces.DetectorSpec | None = None,
    margin: float = faces.DETECTOR_MARGIN,
    tta: str = "none",
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Iterator[Prediction]:
    """One :class:`Prediction` per path, in order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from agebench.evaluate import TTA

    model = run.model.to(device).eval()
    forward = TTA[tta]
    if torch.device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # One core per loader worker: OpenMP threads sharing a core with a busy worker spin at their barriers
        # (5x slower per image here), as in training (agebench.train._set_cpu_threads).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    loader = DataLoader(
        ImageFiles(paths, run, detector, margin),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_init_worker,
    )
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar, torch.no_grad():
        job = bar.add_task("predict", total=len(paths))
        for batch in loader:
            ages: dict[int, float] = {}
            if batch["image"] is not None:
                preds = forward(model, batch["image"].float().to(device)).float().reshape(-1).cpu().numpy()
                ages = dict(zip(batch["good"], preds.tolist(), strict=True))
            for row in batch["rows"]:
                i = row["index"]
                n_faces = None if row["n_faces"] < 0 else row["n_faces"]
                yield Prediction(str(paths[i]), ages.get(i), row["face_box"], n_faces, row["error"])
            bar.advance(job, len(batch["rows"]))


def _init_worker(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def write_csv(predictions: list[Prediction], out: str | os.PathLike[str]) -> None:
    """``path, age, face_box, n_faces, error``: empty age where ``error`` says why there is none."""
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for p in predictions:
            age = "" if p.age is None else f"{p.age:.2f}"
            writer.writerow([p.path, age, p.face_box, "" if p.n_faces is None else p.n_faces, p.error])


def summary(predictions: list[Prediction]) -> dict[str, int]:
    ages = np.array([p.age for p in predictions if p.age is not None])
    return {
        "images": len(predictions),
        "predicted": int(len(ages)),
        "no_face": sum(p.error == "no face found" for p in predictions),
        "unreadable": sum(bool(p.error) and p.error != "no face found" for p in predictions),
        "several_faces": sum((p.n_faces or 0) > 1 for p in predictions),
    }
