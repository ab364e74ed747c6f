"""Grad-CAM for finished runs: heat maps of what raises the predicted age, and how much of it lands on age cues.

For each run the same test faces (chosen by :func:`pick_faces`, spread from youngest to oldest) go through the
run's own eval transform and Grad-CAM (pytorch_grad_cam) on the layers of :mod:`agebench.report.cam_targets`
(``method="hirescam"``: HiResCAM instead, see ``cam_targets.CAM_METHODS``). Written to the explain folder
(``<cell>/explain/`` by default):

* ``gradcam.png``: rows = faces, columns = the input, then one overlay per model and layer (true and predicted
  age in the titles). Given several runs, each run's folder gets its own grid and ``--out`` gets the comparison.
* ``attention.json`` (only when the manifest has the synthetic generator's ``mask`` column): a JSON *list*, one
  entry per explained layer (the hybrid has two: encoder and trunk), each::

      {"model": "hybrid-atto", "dataset": "synth", "layer": "backbone.norm",
       "label": "encoder (output)", "method": "gradcam", "n_images": 8, "n_flat": 0,
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
from agebench.report.cam_targets import (
    CAM_METHODS,
    MASK_COLUMN,
    ExplainedAge,
    PredictedAge,
    attention_share,
    cam_layers,
)
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
    method: str = "gradcam"  # a key of CAM_METHODS


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


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, HiResCAM

    classes = {"gradcam": GradCAM, "hirescam": HiResCAM}
    if method not in classes:
        raise UserError(f"--method {method!r}: choose one of {', '.join(CAM_METHODS)}")
    return classes[method]


def explain_model(model, images: torch.Tensor, name: str = "model", method: str = "gradcam") -> list[LayerMaps]:
    """CAM maps ``[N, H, W]`` (``method``: a key of :data:`CAM_METHODS`) of the predicted age on each target
    layer of the model's backbone."""
    cam_class = _cam_class(method)
    module_names = {id(m): n for n, m in model.named_modules()}
    results = []
    for layer in cam_layers(model.backbone, tuple(images.shape[-2:]), name):
        cam = cam_class(ExplainedAge(model), [layer.module], reshape_transform=layer.reshape)
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
            "method": exp.method,
            **attention_share(lm.maps, masks),
        }
        for lm in exp.layers
    ]


def _title(run: Run, names: list[str]) -> str:
    """The model name, plus the run folder when two columns share it (two seeds of one model)."""
    if names.count(run.model_name) > 1 and run.run_dir is not None:
        return f"{run.model_name} ({run.run_dir.name})"
    return run.model_name


_PANEL = 180  # pixels per face panel in gradcam.png (64 px inputs shown about 3x)
_GAP, _TITLE = 8, 34  # pixels between panels, and above each row for its titles (three lines at 7 pt)


def render_grid(explanations: list[Explanation], path: Path) -> None:
    """Rows = faces, columns = input then one overlay per (model, layer); the same faces in every column.

    The panels are pasted into one image and drawn as a single ``imshow`` with text on top, cheaper than one
    axes per panel (hundreds of them): `make bench`'s explain step went from 20.5 to 18.7 s."""
    import cv2
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    first = explanations[0].faces
    rows = sorted(set(np.round(np.linspace(0, len(first) - 1, min(len(first), MAX_GRID_ROWS))).astype(int)))
    columns = [(e, lm) for e in explanations for lm in e.layers]
    names = [e.run.model_name for e in explanations]
    titles = {id(e): _title(e.run, names) for e in explanations}
    head = 3 * _TITLE // 2  # the first row's titles have three lines (model, layer, prediction)
    width = (1 + len(columns)) * (_PANEL + _GAP) + _GAP
    height = head + len(rows) * (_PANEL + _TITLE) - _TITLE + _GAP
    canvas = np.ones((height, width, 3), np.float32)
    texts: list[tuple[int, int, str]] = []  # (x centre, y bottom, text) in canvas pixels

    def paste(r: int, c: int, rgb: np.ndarray, text: str) -> None:
        x, y = _GAP + c * (_PANEL + _GAP), head + r * (_PANEL + _TITLE)
        canvas[y : y + _PANEL, x : x + _PANEL] = cv2.resize(rgb, (_PANEL, _PANEL), interpolation=cv2.INTER_LINEAR)
        texts.append((x + _PANEL // 2, y - 3, text))

    for r, i in enumerate(rows):
        paste(r, 0, first[i].display, ("input\n" if r == 0 else "") + f"true {first[i].age:g}")
        for c, (exp, lm) in enumerate(columns, start=1):
            overlay = show_cam_on_image(exp.faces[i].display, lm.maps[i], use_rgb=True).astype(np.float32) / 255
            label = f"{titles[id(exp)]}\n{lm.label}\n" if r == 0 else ""
            flat = " [flat]" if not lm.maps[i].max() > 0 else ""  # nothing raises the prediction
            paste(r, c, overlay, f"{label}pred {lm.preds[i]:.1f} (true {exp.faces[i].age:g}){flat}")
    dpi = 100
    fig = Figure(figsize=(width / dpi, (height + 24) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, height / (height + 24)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, y, text in texts:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7, linespacing=1.1)
    method = CAM_METHODS[explanations[0].method]
    fig.suptitle(f"{method} of the predicted age (red: raises the prediction)", fontsize=9, y=1 - 4 / (height + 24))
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})


def explain_run(run: Run, paths: list[str], device: str = "cpu", method: str = "gradcam") -> Explanation:
    index = {r.path: i for i, r in enumerate(run.data.records)}
    missing = [p for p in paths if p not in index]
    if missing:
        raise UserError(
            f"{run.run_dir or run.model_name}: test image {missing[0]!r} is not in its test split; "
            "compare runs of one data set"
        )
    faces = [load_face(run, index[p]) for p in paths]
    model = run.model.to(device)
    maps = explain_model(model, torch.stack([f.image for f in faces]), run.model_name, method)
    return Explanation(run, faces, maps, method)


def _write(explanations: list[Explanation], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    render_grid(explanations, out / GRID_PNG)
    written = [out / GRID_PNG]
    entries = [e for exp in explanations if exp.run.has_masks for e in attention_entries(exp)]
    if entries:
        write_json(out / ATTENTION_JSON, entries)
        written.append(out / ATTENTION_JSON)
    return written


def explain(
    runs: list[Run], n: int = 8, out: str | Path | None = None, device: str = "cpu", method: str = "gradcam"
) -> list[Path]:
    """Explain ``runs`` on the same ``n`` test faces with ``method`` (a key of :data:`CAM_METHODS`); returns the
    files written (see the module docstring)."""
    _cam_class(method)
    if not runs:
        raise UserError("nothing to explain: give --run or --checkpoint")
    if n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    if out is None and (len(runs) > 1 or runs[0].run_dir is None):
        raise UserError("--out is required with several runs or with --checkpoint")
    first = runs[0].data.records
    paths = [first[i].path for i in pick_faces(first, n)]
    explanations = [explain_run(run, paths, device, method) for run in runs]
    if len(runs) == 1:
        return _write(explanations, Path(out) if out is not None else runs[0].run_dir / "explain")
    written = [p for e in explanations if e.run.run_dir is not None for p in _write([e], e.run.run_dir / "explain")]
    return written + _write(explanations, Path(out))  # type: ignore[arg-type]
