"""Occlusion sensitivity of the predicted age: the one attribution explain computes the same way for every model.

Grad-CAM's resolution is the grid of the layer it hooks, and at one image size that grid differs by architecture:
at the bench's 64 px ConvNeXt-Atto's last map is 2 x 2 (each cell a quadrant of the face, so a share of its mass
in small cue regions mostly says top against bottom), the hybrid's encoder map 4 x 4, and a class-token ViT's
map is read one attention layer before the head (Chefer et al., CVPR 2021, on why that map is unreliable).
Comparing architectures by where they look needs one instrument at one resolution for all of them.

Occlusion (Zeiler & Fergus, ECCV 2014, "Visualizing and Understanding Convolutional Networks") slides a square
window over the input, replaces what it covers with a baseline and records how much the predicted age drops. It
needs no gradients and no layer, so it treats every architecture alike; its resolution is the window's, in input
pixels. The map at a pixel is the mean drop over the windows that cover it, ReLU-ed (explain maps show what
*raises* the prediction, as Grad-CAM's do) and divided by its maximum, so its mass is each region's share of the
positive drop; a map that nothing raises is all zero (``n_flat`` in attention.json).

The baseline is the image itself box-blurred (a kernel as wide as the window, odd): it removes the fine texture a
window covers (wrinkles, folds, fine lines) and keeps its colours and layout, so the occluded face stays a face.
A constant fill (the data set's mean colour) paints grey patches that a model can read as grey hair: on the bench
ConvNeXt it *raised* the predicted age wherever it covered hair (hair share 17.5 points under a uniform map),
which measures the patch, not the face. What blur cannot test is a cue that *is* colour (greying hair): a model
that reads age from hair colour shows little mass on hair here, and Grad-CAM remains the view of that.

Cost: one forward pass per window position and image (at 64 px, window 8, stride 4: 225), no backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from agebench.errors import UserError

_BATCH = 256  # occluded copies per forward pass
_ROUNDING = 1e-5  # drops below this fraction of the prediction are float32 noise, not a region that matters


def default_window(size: tuple[int, int]) -> tuple[int, int]:
    """(window, stride) for an input of ``size``: an eighth of the shorter side, half of that apart (8 / 4 at 64 px).

    An eighth of a 64 px face chip is about a cue region's height (a forehead band, a fold, an eye); windows
    half a window apart put every interior pixel under four placements (two along each axis)."""
    window = max(2, min(size) // 8)
    return window, max(1, window // 2)


def resolve_window(size: tuple[int, int], window: int | None, stride: int | None) -> tuple[int, int]:
    """``window`` (default :func:`default_window`'s) and ``stride`` (default half the window), checked."""
    if window is None:
        window = default_window(size)[0]
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= window <= min(size):
        raise UserError(f"occlusion window {window}: must be between 1 and the image's side ({min(size)} px)")
    if not 1 <= stride <= window:
        raise UserError(f"occlusion stride {stride}: must be between 1 and the window ({window} px)")
    return window, stride


def positions(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, ``stride`` apart, the last flush with the edge so every pixel is covered."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def blurred(images: torch.Tensor, window: int) -> torch.Tensor:
    """Box blur of odd width >= ``window`` (edges replicated): the occlusion baseline."""
    k = window | 1
    return F.avg_pool2d(F.pad(images, (k // 2,) * 4, mode="replicate"), k, stride=1)


def occlusion_maps(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    window: int | None = None,
    stride: int | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """Occlusion maps ``[N, H, W]`` in 0..1 of ``predict`` (images ``[B, 3, H, W]`` -> ages ``[B]``) on ``images``.

    ``window`` and ``stride`` are in input pixels (defaults: :func:`resolve_window`). Runs under ``no_grad`` on the
    images' device. ``progress``: a bar's title, drawn on stderr when it is a terminal (a model takes tens of seconds
    on CPU at 64 px).
    """
    from tqdm.auto import tqdm

    n, _, h, w = images.shape
    window, stride = resolve_window((h, w), window, stride)
    places = [(y, x) for y in positions(h, window, stride) for x in positions(w, window, stride)]
    cover = torch.zeros(h, w)
    for y, x in places:
        cover[y : y + window, x : x + window] += 1
    maps = np.zeros((n, h, w), np.float32)
    with torch.no_grad():
        base = predict(images).float().reshape(-1).cpu()
        smooth = blurred(images, window)
        for i in tqdm(range(n), desc=progress, unit="img", disable=None if progress else True, leave=False):
            drops = []
            for start in range(0, len(places), _BATCH):
                chunk = places[start : start + _BATCH]
                batch = images[i].repeat(len(chunk), 1, 1, 1)
                for j, (y, x) in enumerate(chunk):
                    batch[j, :, y : y + window, x : x + window] = smooth[i, :, y : y + window, x : x + window]
                drops.append(base[i] - predict(batch).float().reshape(-1).cpu())
            drop = torch.cat(drops)
            total = torch.zeros(h, w)
            for d, (y, x) in zip(drop.tolist(), places, strict=True):
                total[y : y + window, x : x + window] += d
            heat = (total / cover).clamp(min=0)
            top = float(heat.max())
            if top > _ROUNDING * max(1.0, abs(float(base[i]))):  # else only float32 rounding: a flat map
                maps[i] = (heat / top).numpy()
    return maps
