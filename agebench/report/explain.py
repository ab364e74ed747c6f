"""Grad-CAM and occlusion for finished runs: maps of what raises the predicted age, and how much lands on age cues.

For each run the same test faces (chosen by :func:`pick_faces`, spread from youngest to oldest) go through the
run's own eval transform and Grad-CAM (pytorch_grad_cam) on the layers of :mod:`agebench.report.cam_targets`
(``method="hirescam"``: HiResCAM instead, see ``cam_targets.CAM_METHODS``), or (``method="occlusion"``) through
occlusion sensitivity on the input, the same instrument at the same resolution for every architecture (see
:mod:`agebench.report.occlusion`). Written to the explain folder (``<cell>/explain/`` by default):

* ``gradcam.png`` (``hirescam.png``, ``occlusion.png``): rows = faces, columns = the input, then one overlay per
  model and layer (true and predicted age in the titles). Given several runs, each run's folder gets its own grid
  and ``--out`` gets the comparison.
* ``attention.json`` (only when the manifest has the synthetic generator's ``mask`` column): a JSON *list*, one
  entry per explained layer and method (the hybrid has two Grad-CAM layers: encoder and trunk; occlusion has
  one, ``input``); a run with another method replaces that method's entries and keeps the others'. With
  ``--control`` each layer also gets an entry ``"control": "untrained"``: the same map of the run's architecture
  at a fresh initialisation, the score an attribution reaches without training, and the trained entry gains
  ``vs_control`` (``difference`` and ``difference_ci`` per region: trained - untrained share, paired by image).
  Each::

      {"model": "hybrid-atto", "dataset": "synth", "layer": "backbone.norm",
       "label": "encoder (output)", "method": "gradcam", "n_images": 8, "n_flat": 0,
       "share": {"forehead": 0.21, "eye_corners": 0.05, "nasolabial": 0.09, "hair": 0.30, "eyes": 0.04,
                 "mouth": 0.06, "any": 0.62},
       "uniform_baseline": {"forehead": 0.06, ...}}

  ``share`` is the fraction of Grad-CAM mass inside each age-cue region (``any``: their union), averaged over the
  explained images; ``uniform_baseline`` is what a constant map scores, i.e. the regions' share of the image area
  on the same images. Masks pass through the very same eval transform as the images (albumentations applies its
  geometric steps to masks with nearest-neighbour interpolation). Shares are taken on the maps as shown
  (Grad-CAM's: ReLU-ed, then min-max scaled per image; occlusion's: ReLU-ed, divided by the maximum).
  ``n_flat`` counts images whose map is zero everywhere (no region raises the predicted age): they carry no mass
  to share and are left out of ``n_images``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
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
    MASK_COLUMN,
    METHODS,
    ExplainedAge,
    PredictedAge,
    attention_share,
    cam_layers,
    control_difference,
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
    method: str = "gradcam"  # a key of METHODS
    controls: list[LayerMaps] = field(default_factory=list)  # the same maps of the untrained network (--control)


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


def _check_method(method: str, window: int | None = None, stride: int | None = None) -> None:
    """A known method, and an occlusion window only with occlusion."""
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method != "occlusion" and (window is not None or stride is not None):
        raise UserError("--window/--stride set the occlusion window: use them with --method occlusion")


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, HiResCAM

    return {"gradcam": GradCAM, "hirescam": HiResCAM}[method]


def _occlusion(model, images: torch.Tensor, window: int | None, stride: int | None, name: str) -> list[LayerMaps]:
    """One input-resolution map per image (see :mod:`agebench.report.occlusion`), labelled with its window."""
    from agebench.report.occlusion import occlusion_maps, resolve_window

    window, stride = resolve_window(tuple(images.shape[-2:]), window, stride)
    device = next(model.parameters()).device
    images = images.to(device)
    maps = occlusion_maps(model.explained_age, images, window, stride, progress=f"occlusion {name}")
    with torch.no_grad():
        preds = np.concatenate([model(c).float().cpu().reshape(-1).numpy() for c in images.split(_CAM_BATCH)])
    return [LayerMaps(f"input (occlusion {window} px, stride {stride})", "input", maps, preds)]


def explain_model(
    model,
    images: torch.Tensor,
    name: str = "model",
    method: str = "gradcam",
    window: int | None = None,
    stride: int | None = None,
) -> list[LayerMaps]:
    """Maps ``[N, H, W]`` of the predicted age (``method``: a key of :data:`METHODS`): a CAM on each target layer
    of the model's backbone, or one occlusion map on the input (``window``/``stride`` in pixels, occlusion only)."""
    _check_method(method, window, stride)
    if method == "occlusion":
        return _occlusion(model, images, window, stride, name)
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
    """One attention.json entry per explained layer. With an untrained control (``--control``) its entries carry
    ``"control": "untrained"``, and each trained layer's entry gains ``vs_control``: the paired trained - untrained
    difference of its shares (:func:`~agebench.report.cam_targets.control_difference`)."""
    masks = [f.mask for f in exp.faces]
    twins = {lm.label: lm for lm in exp.controls}

    def entry(lm: LayerMaps, **extra: Any) -> dict[str, Any]:
        base = {"model": exp.run.model_name, "dataset": exp.run.dataset, "layer": lm.layer, "label": lm.label}
        return {**base, "method": exp.method, **extra, **attention_share(lm.maps, masks)}

    entries = []
    for lm in exp.layers:
        twin = twins.get(lm.label)
        vs = {"vs_control": control_difference(lm.maps, twin.maps, masks)} if twin is not None else {}
        entries.append(entry(lm, **vs))
    return entries + [entry(lm, control="untrained") for lm in exp.controls]


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
    method = explanations[0].method
    what = "Occlusion sensitivity (a blurred window)" if method == "occlusion" else METHODS[method]
    fig.suptitle(f"{what} of the predicted age (red: raises the prediction)", fontsize=9, y=1 - 4 / (height + 24))
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})


def explain_run(
    run: Run,
    paths: list[str],
    device: str = "cpu",
    method: str = "gradcam",
    window: int | None = None,
    stride: int | None = None,
    control: bool = False,
) -> Explanation:
    """Maps of ``run`` on its test images ``paths``; with ``control``, also of its untrained twin
    (:func:`agebench.runs.untrained_like`), scored in attention.json but not drawn."""
    index = {r.path: i for i, r in enumerate(run.data.records)}
    missing = [p for p in paths if p not in index]
    if missing:
        raise UserError(
            f"{run.run_dir or run.model_name}: test image {missing[0]!r} is not in its test split; "
            "compare runs of one data set"
        )
    faces = [load_face(run, index[p]) for p in paths]
    images = torch.stack([f.image for f in faces])
    maps = explain_model(run.model.to(device), images, run.model_name, method, window, stride)
    controls = []
    if control:
        from agebench.runs import untrained_like

        twin = untrained_like(run.model).to(device)
        controls = explain_model(twin, images, f"{run.model_name} (untrained)", method, window, stride)
    return Explanation(run, faces, maps, method, controls)


def grid_png(method: str) -> str:
    """The figure's name: ``gradcam.png`` for Grad-CAM (as before agebench 0.11), ``<method>.png`` otherwise."""
    return GRID_PNG if method == "gradcam" else f"{method}.png"


def _write(explanations: list[Explanation], out: Path) -> list[Path]:
    """The grid, and attention.json with this method's entries replaced (other methods' entries are kept)."""
    out.mkdir(parents=True, exist_ok=True)
    method = explanations[0].method
    render_grid(explanations, out / grid_png(method))
    written = [out / grid_png(method)]
    entries = [e for exp in explanations if exp.run.has_masks for e in attention_entries(exp)]
    if entries:
        kept = [e for e in _read_entries(out / ATTENTION_JSON) if e.get("method", "gradcam") != method]
        write_json(out / ATTENTION_JSON, kept + entries)
        written.append(out / ATTENTION_JSON)
    return written


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of an existing attention.json; none where it is missing or unreadable (it is rewritten)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def explain(
    runs: list[Run],
    n: int = 8,
    out: str | Path | None = None,
    device: str = "cpu",
    method: str = "gradcam",
    window: int | None = None,
    stride: int | None = None,
    control: bool = False,
) -> list[Path]:
    """Explain ``runs`` on the same ``n`` test faces with ``method`` (a key of :data:`METHODS`; ``window`` and
    ``stride``: occlusion's, in pixels; ``control``: score each run's untrained twin too); returns the files
    written (see the module docstring)."""
    _check_method(method, window, stride)
    if not runs:
        raise UserError("nothing to explain: give --run or --checkpoint")
    if n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    if out is None and (len(runs) > 1 or runs[0].run_dir is None):
        raise UserError("--out is required with several runs or with --checkpoint")
    first = runs[0].data.records
    paths = [first[i].path for i in pick_faces(first, n)]
    explanations = [explain_run(run, paths, device, method, window, stride, control) for run in runs]
    if len(runs) == 1:
        return _write(explanations, Path(out) if out is not None else runs[0].run_dir / "explain")
    written = [p for e in explanations if e.run.run_dir is not None for p in _write([e], e.run.run_dir / "explain")]
    return written + _write(explanations, Path(out))  # type: ignore[arg-type]
