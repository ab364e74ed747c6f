"""`agebench export`: a trained run as one self-contained file, checked against its checkpoint.

Formats: ``torchscript`` (``.pt``, torch.jit.trace; deprecated in torch 2.14, kept until torch removes it), ``onnx``
(``.onnx``, torch's dynamo-based exporter: torch.export + onnxscript, run by onnxruntime) and ``exported``
(``.pt2``, a ``torch.export`` program: torch.export.export + torch.export.save, read back with torch.export.load).

The exported network takes what a deployment has, RGB pixels: float32 ``[B, 3, S, S]`` in 0..255, the face crop
already resized and centre-cropped as the run's eval transform does (``S`` = the run's image size; the batch
size is free). It normalises with the run's mean and std itself and returns ages in years ``[B]``. The
preprocessing constants (size, crop_pct, mean, std, input layout) are stored in the file: the ``agebench.json``
extra file of TorchScript and ``.pt2``, ONNX metadata_props.

Parity: a batch of the run's test images goes through the checkpoint as the bench evaluates it (albumentations'
eval transform, Normalize included) and through the exported file from its uint8 pixels; the largest
difference in years is printed, and the export fails when it exceeds the tolerance (1e-4 years).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agebench.data import transforms as T
from agebench.errors import UserError, require_package
from agebench.predict import LoadedRun

TOLERANCE = 1e-4  # years
OPSET = 18  # the dynamo-based ONNX exporter's lowest


class PixelsToAge(nn.Module):
    """backbone -> head -> decoded age, behind the run's normalisation: pixels in, years out."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        return self.head.decode(self.head(self.backbone(x))).float().reshape(-1)


def metadata(run: LoadedRun) -> dict[str, object]:
    return {
        "model": run.name,
        "checkpoint": str(run.checkpoint),
        "input": "float32 [B, 3, S, S] RGB pixels in 0..255, face crop resized and centre-cropped to S",
        "img_size": run.img_size,
        "crop_pct": run.crop_pct,
        "resize_short_side_to": run.resize,
        "mean": list(T.IMAGENET_MEAN),
        "std": list(T.IMAGENET_STD),
        "output": "age in years [B]",
    }


def wrap(run: LoadedRun) -> PixelsToAge:
    model = run.model
    return PixelsToAge(model.backbone, model.head, T.IMAGENET_MEAN, T.IMAGENET_STD).eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch 2.14 marks TorchScript deprecated and the exporters warn at length; the parity check is the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_runner(loaded: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    """A loaded TorchScript or torch.export module as a numpy pixels -> ages function."""

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(pixels)).numpy()

    return run


def _torchscript(net: PixelsToAge, example: torch.Tensor, out: Path, meta: dict) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"agebench.json": json.dumps(meta)})


def _run_torchscript(file: Path) -> Callable[[np.ndarray], np.ndarray]:
    with _quiet():
        return _torch_runner(torch.jit.load(str(file), map_location="cpu").eval())


def _need(module: str, fmt: str) -> None:
    require_package(module, f"--format {fmt}", "export")


def _batch_dim() -> tuple[dict[int, object]]:
    """The batch size stays free: one symbolic dimension on the pixels' first axis."""
    return ({0: torch.export.Dim("batch")},)


def _onnx(net: PixelsToAge, example: torch.Tensor, out: Path, meta: dict) -> None:
    _need("onnx", "onnx")
    _need("onnxscript", "onnx")
    import onnx

    # torch's dynamo-based exporter: torch.export captures the graph, onnxscript translates it (opset 18, its
    # lowest). The TorchScript-based one (dynamo=False) is deprecated in torch 2.14.
    with _quiet():
        torch.onnx.export(
            net,
            (example,),
            str(out),
            dynamo=True,
            input_names=["pixels"],
            output_names=["age"],
            dynamic_shapes=_batch_dim(),
            opset_version=OPSET,
            verbose=False,
        )
    proto = onnx.load(str(out))
    for key, value in meta.items():
        proto.metadata_props.add(key=f"agebench.{key}", value=json.dumps(value))
    onnx.save(proto, str(out))


def _exported(net: PixelsToAge, example: torch.Tensor, out: Path, meta: dict) -> None:
    """A ``torch.export`` program (``.pt2``): the graph with its weights, the metadata as ``agebench.json``."""
    with _quiet():
        program = torch.export.export(net, (example,), dynamic_shapes=_batch_dim())
        torch.export.save(program, str(out), extra_files={"agebench.json": json.dumps(meta)})


def _run_exported(file: Path) -> Callable[[np.ndarray], np.ndarray]:
    with _quiet():
        return _torch_runner(torch.export.load(str(file)).module())


def _run_onnx(file: Path) -> Callable[[np.ndarray], np.ndarray]:
    _need("onnxruntime", "onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return lambda pixels: session.run(None, {"pixels": pixels})[0]


@dataclass(frozen=True)
class Format:
    suffix: str
    write: Callable[[PixelsToAge, torch.Tensor, Path, dict], None]
    load: Callable[[Path], Callable[[np.ndarray], np.ndarray]]


FORMATS: dict[str, Format] = {
    "torchscript": Format(".pt", _torchscript, _run_torchscript),
    "onnx": Format(".onnx", _onnx, _run_onnx),
    "exported": Format(".pt2", _exported, _run_exported),
}


@dataclass
class Parity:
    n_images: int
    max_abs_diff: float  # years
    reference: np.ndarray  # the checkpoint's ages
    exported: np.ndarray

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


def parity(run: LoadedRun, rgb_images: list[np.ndarray], file: Path, fmt: str) -> Parity:
    """The checkpoint (albumentations eval transform with Normalize, as the bench evaluates) against the exported
    file (uint8 pixels of the same crops) on the same images."""
    full = T.eval_transform(run.img_size, crop_pct=run.crop_pct)
    pixels_tf = T.pixel_transform(run.img_size, crop_pct=run.crop_pct)
    normalised = torch.stack([T.to_chw_tensor(full(image=im)["image"]) for im in rgb_images])
    pixels = np.stack([pixels_tf(image=im)["image"].transpose(2, 0, 1) for im in rgb_images]).astype(np.float32)
    with torch.no_grad():
        reference = run.model.eval()(normalised).float().numpy()
    exported = np.asarray(FORMATS[fmt].load(file)(pixels), np.float64).reshape(-1)
    return Parity(len(rgb_images), float(np.abs(exported - reference).max()), reference, exported)


def export(run: LoadedRun, fmt: str, out: str | os.PathLike[str], rgb_images: list[np.ndarray]) -> Parity:
    """Write ``out`` in ``fmt`` and check it on ``rgb_images`` (see :func:`parity`). The file is written before
    the check and the :class:`Parity` returned either way, so a failed export can be inspected; the CLI exits 2
    when it fails."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not rgb_images:
        raise UserError("no test images to check the export on")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = wrap(run)
    example = torch.full((2, 3, run.img_size, run.img_size), 128.0)
    try:
        FORMATS[fmt].write(net, example, out, metadata(run))
    except UserError:
        raise
    except Exception as err:  # an operator the format cannot express: say which model and why, in one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        others = " or ".join(f for f in FORMATS if f != fmt)
        raise UserError(
            f"{run.name} cannot be exported to {fmt}: {type(err).__name__}: {first[:300]} (try --format {others})"
        ) from None
    return parity(run, rgb_images, out, fmt)
