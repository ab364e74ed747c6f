"""Grad-CAM for finished runs: heat maps of what raises the predicted age, and how much of it lands on age cues.

For each run the same test faces (chosen by :func:`pick_faces`, spread from youngest to oldest) go through the
run's own eval transform and Grad-CAM (pytorch_grad_cam) on the layers of :mod:`agebench.report.cam_targets`.
Written to the explain folder (``<cell>/explain/`` by default):

* ``gradcam.png``: rows = faces, columns = the input, then one overlay per model and layer (true and predicted
  age in the titles). Given several runs, each run's folder gets its own grid and ``--out`` gets the comparison.
* ``attention.json`` (only when the manifest has the synthetic generator's ``mask`` column): a JSON *list*, one
  entry per explained layer (the hybrid has two: encoder and trunk), each::

      {"model": "hybrid-atto", "dataset": "synth", "layer": "backbone.norm",
       "label": "encoder (output)", "n_images": 8, "n_flat": 0,
       "share": {"forehead": 0.21, "eye_corners": 0.05, "nasolabial": 0.09, "hair": 0.30, "eyes": 0.04,
                 "mouth": 0.06, "any": 0.62},
       "uniform_baseline": {"forehead": 0.06, ...}}

  ``share`` is the fraction of Grad-CAM mass inside each age-cue region (``any``: their union), averaged over the
  explained images; ``uniform_baseline`` is what a constant map scores, i.e. the regions' share of the image area
  on the same images. Masks pass through the very same eval transform as the images (albumentations applies its
  geometric steps to masks with nearest-neighbour interpolation). Shares are taken on pytorch_grad_cam's maps as
  shown (ReLU-ed, then min-max scaled per image). ``n_flat`` counts images whose map is zero
  everywhere (no region raises the predicted age): they carry no mass to share and are left out of ``n_images``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agebench.atomic import atomic_open, write_json
from agebench.data import transforms as T
from agebench.data.datamodule import AgeDataModule, FaceAgeDataset
from agebench.data.manifest import Manifest, Record
from agebench.errors import UserError
from agebench.report.cam_targets import MASK_COLUMN, ExplainedAge, PredictedAge, attention_share, cam_layers
from agebench.runs import load_regressor, run_checkpoint

GRID_PNG, ATTENTION_JSON = "gradcam.png", "attention.json"
MAX_GRID_ROWS = 16  # more explained faces still count in attention.json; the figure shows an even spread
_CAM_BATCH = 16


@dataclass
class Run:
    """A trained model and the test split it is explained on, with that run's eval transform."""

    model_name: str
    dataset: str
    model: Any  # AgeRegressor, in eval mode
    data: FaceAgeDataset
    manifest: Manifest
    run_dir: Path | None

    @property
    def has_masks(self) -> bool:
        return MASK_COLUMN in self.manifest.extra_columns


@dataclass
class Face:
    path: str
    age: float
    image: torch.Tensor  # [3, H, W], normalised: what the model sees
    display: np.ndarray  # [H, W, 3] float in 0..1: the same pixels, for overlays
    mask: np.ndarray | None  # [H, W] uint8 region bits, transformed like the image


@dataclass
class LayerMaps:
    label: str
    layer: str  # module path inside the AgeRegressor
    maps: np.ndarray  # [N, H, W] in 0..1, one per face
    preds: np.ndarray  # [N] predicted ages


@dataclass
class Explanation:
    run: Run
    faces: list[Face]
    layers: list[LayerMaps]


def open_run(
    ckpt: Path,
    manifest: str | Path,
    root: str | Path | None = None,
    *,
    crop_pct: float = 1.0,
    model_name: str | None = None,
    dataset: str | None = None,
    run_dir: Path | None = None,
) -> Run:
    """A checkpoint plus the test split of ``manifest`` at the image size the model was trained at."""
    model = load_regressor(ckpt)
    config = model.hparams.model_config
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found (pass --manifest/--root if the data moved)")
    # Masks are in the original images' coordinates, so read originals rather than the (cropped) uint8 cache.
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        masks = MASK_COLUMN in (csv.DictReader(fh).fieldnames or [])
    dm = AgeDataModule(
        manifest,
        root,
        img_size=int(config["img_size"]),
        crop_pct=crop_pct,
        allow_leaky_splits=True,
        use_cache=not masks,
    )
    dm.setup()
    data = dm.datasets["test"]
    if not data.records:
        raise UserError(f"{manifest}: the test split is empty")
    return Run(model_name or str(config["name"]), dataset or manifest.parent.name, model, data, dm.manifest, run_dir)


def load_run(run_dir: str | Path, manifest: str | Path | None = None, root: str | Path | None = None) -> Run:
    """A result cell (``RESULTS/<dataset>/<model>/seed<k>``): its best checkpoint and its config's test split."""
    run_dir = Path(run_dir)
    ckpt, data = run_checkpoint(run_dir)
    if not (manifest or data.get("manifest")):
        raise UserError(f"{run_dir / 'config.yaml'}: no data.manifest; pass --manifest")
    metrics: dict[str, Any] = {}
    if (run_dir / "metrics.json").is_file():
        from agebench.report.failures import read_json

        metrics = read_json(run_dir / "metrics.json")
    return open_run(
        ckpt,
        manifest or data["manifest"],
        root if (root is not None or manifest is not None) else data.get("root"),
        crop_pct=float(data.get("crop_pct", 1.0)),
        model_name=metrics.get("model"),
        dataset=metrics.get("dataset") or data.get("name"),
        run_dir=run_dir,
    )


def pick_faces(records: list[Record], n: int) -> list[int]:
    """``n`` test indices spread evenly over the age range (youngest to oldest); deterministic, ties by path."""
    order = sorted(range(len(records)), key=lambda i: (records[i].age, records[i].path))
    positions = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [order[p] for p in positions]


def _denormalize(transform, image: np.ndarray) -> np.ndarray:
    """Undo the pipeline's Normalize so overlays show the exact pixels the model saw."""
    norm = next((t for t in transform.transforms if type(t).__name__ == "Normalize"), None)
    if norm is None:
        return np.clip(image / 255.0, 0, 1).astype(np.float32)
    return np.clip(image * np.array(norm.std) + np.array(norm.mean), 0, 1).astype(np.float32)


def load_face(run: Run, index: int) -> Face:
    """Test image ``index`` (and its region mask, if any) through the run's eval transform."""
    import cv2

    record = run.data.records[index]
    rgb = run.data.load_rgb(index)
    mask = None
    if run.has_masks and record.extra.get(MASK_COLUMN):
        file = run.manifest.root / record.extra[MASK_COLUMN]
        if not file.is_file():
            raise UserError(f"{run.manifest.file}:{record.row}: mask {record.extra[MASK_COLUMN]!r} not found")
        mask = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise UserError(f"{file}: cannot decode mask")
        mask = mask if mask.ndim == 2 else mask[..., 0]
        if mask.shape != rgb.shape[:2]:
            raise UserError(f"{file}: mask is {mask.shape[1]}x{mask.shape[0]}, image {rgb.shape[1]}x{rgb.shape[0]}")
    out = run.data.transform(image=rgb, **({"mask": mask} if mask is not None else {}))
    image = out["image"]
    return Face(
        record.path, record.age, T.to_chw_tensor(image), _denormalize(run.data.transform, image), out.get("mask")
    )


def explain_model(model, images: torch.Tensor, name: str = "model") -> list[LayerMaps]:
    """Grad-CAM maps ``[N, H, W]`` of the predicted age on each target layer of the model's backbone."""
    from pytorch_grad_cam import GradCAM

    module_names = {id(m): n for n, m in model.named_modules()}
    results = []
    for layer in cam_layers(model.backbone, tuple(images.shape[-2:]), name):
        cam = GradCAM(ExplainedAge(model), [layer.module], reshape_transform=layer.reshape)
        maps, preds = [], []
        try:  # not `with`: GradCAM's __exit__ swallows IndexErrors
            with torch.enable_grad():
                for chunk in images.split(_CAM_BATCH):
                    maps.append(cam(chunk, targets=[PredictedAge()] * len(chunk)))
                    with torch.no_grad():  # the decoded age (cam.outputs is the explained one, see cam_targets)
                        preds.append(model(chunk.to(cam.device)).float().cpu().reshape(-1).numpy())
        finally:
            cam.activations_and_grads.release()
        results.append(
            LayerMaps(layer.label, module_names[id(layer.module)], np.concatenate(maps), np.concatenate(preds))
        )
    return results


def attention_entries(exp: Explanation) -> list[dict[str, Any]]:
    masks = [f.mask for f in exp.faces]
    return [
        {
            "model": exp.run.model_name,
            "dataset": exp.run.dataset,
            "layer": lm.layer,
            "label": lm.label,
            **attention_share(lm.maps, masks),
        }
        for lm in exp.layers
    ]


def _title(run: Run, names: list[str]) -> str:
    """The model name, plus the run folder when two columns share it (two seeds of one model)."""
    if names.count(run.model_name) > 1 and run.run_dir is not None:
        return f"{run.model_name} ({run.run_dir.name})"
    return run.model_name


def render_grid(explanations: list[Explanation], path: Path) -> None:
    """Rows = faces, columns = input then one overlay per (model, layer); the same faces in every column."""
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    first = explanations[0].faces
    rows = sorted(set(np.round(np.linspace(0, len(first) - 1, min(len(first), MAX_GRID_ROWS))).astype(int)))
    columns = [(e, lm) for e in explanations for lm in e.layers]
    names = [e.run.model_name for e in explanations]
    titles = {id(e): _title(e.run, names) for e in explanations}
    # Fixed margins, not constrained layout: laying out hundreds of small axes took most of `make bench`'s
    # explain step (10 of 16 s); the only tall titles are the first row's (model, layer, prediction: 3 lines).
    height = 2.0 * len(rows) + 0.9
    fig = Figure(figsize=(1.9 * (1 + len(columns)), height))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.85 / height, wspace=0.08, hspace=0.2)
    for r, i in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1 + len(columns), r * (1 + len(columns)) + 1)
        ax.imshow(first[i].display)
        ax.set_title(("input\n" if r == 0 else "") + f"true {first[i].age:g}", fontsize=8)
        ax.axis("off")
        for c, (exp, lm) in enumerate(columns, start=2):
            ax = fig.add_subplot(len(rows), 1 + len(columns), r * (1 + len(columns)) + c)
            ax.imshow(show_cam_on_image(exp.faces[i].display, lm.maps[i], use_rgb=True))
            head = f"{titles[id(exp)]}\n{lm.label}\n" if r == 0 else ""
            flat = " [flat]" if not lm.maps[i].max() > 0 else ""  # nothing raises the prediction
            ax.set_title(f"{head}pred {lm.preds[i]:.1f} (true {exp.faces[i].age:g}){flat}", fontsize=7)
            ax.axis("off")
    fig.suptitle("Grad-CAM of the predicted age (red: raises the prediction)", fontsize=9, y=1 - 0.08 / height)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, metadata={"Software": None})


def explain_run(run: Run, paths: list[str], device: str = "cpu") -> Explanation:
    index = {r.path: i for i, r in enumerate(run.data.records)}
    missing = [p for p in paths if p not in index]
    if missing:
        raise UserError(
            f"{run.run_dir or run.model_name}: test image {missing[0]!r} is not in its test split; "
            "compare runs of one data set"
        )
    faces = [load_face(run, index[p]) for p in paths]
    model = run.model.to(device)
    return Explanation(run, faces, explain_model(model, torch.stack([f.image for f in faces]), run.model_name))


def _write(explanations: list[Explanation], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    render_grid(explanations, out / GRID_PNG)
    written = [out / GRID_PNG]
    entries = [e for exp in explanations if exp.run.has_masks for e in attention_entries(exp)]
    if entries:
        write_json(out / ATTENTION_JSON, entries)
        written.append(out / ATTENTION_JSON)
    return written


def explain(runs: list[Run], n: int = 8, out: str | Path | None = None, device: str = "cpu") -> list[Path]:
    """Explain ``runs`` on the same ``n`` test faces; returns the files written (see the module docstring)."""
    if not runs:
        raise UserError("nothing to explain: give --run or --checkpoint")
    if n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    if out is None and (len(runs) > 1 or runs[0].run_dir is None):
        raise UserError("--out is required with several runs or with --checkpoint")
    first = runs[0].data.records
    paths = [first[i].path for i in pick_faces(first, n)]
    explanations = [explain_run(run, paths, device) for run in runs]
    if len(runs) == 1:
        return _write(explanations, Path(out) if out is not None else runs[0].run_dir / "explain")
    written = [p for e in explanations if e.run.run_dir is not None for p in _write([e], e.run.run_dir / "explain")]
    return written + _write(explanations, Path(out))  # type: ignore[arg-type]
