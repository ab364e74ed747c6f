"""What Grad-CAM looks at in each model family: target layers, token-to-grid reshapes and the regression target.

Why these layers:

* ConvNeXt (and any timm convnet): the last stage, i.e. the deepest map that still has a spatial grid; timm's
  ``feature_info`` names it for every convnet (``stages.3``, ``layer4``, ``blocks.6``...), so no per-model list.
  At small CPU sizes, where the last map is 1 x 1, the deepest stage with at least a 2 x 2 map instead.
* ViT: ``blocks[-1].norm1``, the input of the last block's attention. The *output* of the last block is the
  wrong hook: only the class token reaches the head after it, so the patch tokens' gradients are exactly zero
  there. The tokens are reshaped to the patch grid read from the model (``num_prefix_tokens`` class/register
  tokens dropped, ``patch_embed.grid_size`` rows x columns), never an assumed 1 + 14 x 14.
* Hybrid (ConvNeXt trunk + encoder): both the encoder's map (class token dropped, tokens laid back on the grid
  of the trunk stage it tokenises) and the trunk's last stage. With a class token that map is the last encoder
  layer's input (``layers[-1].norm1``, for the same reason as ViT).
* Transformers that *average* their tokens (the hybrid's ``pool="avg"``, a timm ViT with ``global_pool="avg"``):
  the final norm's output, i.e. exactly the tokens the pool averages. Every token there receives the same
  gradient (the head's, divided by N), so Grad-CAM reduces to CAM (Zhou et al. 2016, "Learning Deep Features for
  Discriminative Localization") on the head's local linearisation: the analogue of a convnet's last stage, which
  the trunk-alone ablation is explained at. The last layer's input would explain the tokens one attention layer
  before the head reads them (agebench 0.8; before it, averaged encoders were explained there too).

The target is the predicted age itself (:class:`PredictedAge` on :class:`ExplainedAge`): the map shows which
regions raise it. For every head that is the decoded age, except where the decode is an argmax or a threshold
count (``classification``/``unimodal`` with ``decode: argmax``, ``orcnn``, ``coral``, ``corn``), whose gradient
is zero: there the head's expectation is explained (the head's ``explained_age``).

Where the maps *should* look, on the synthetic set: the generator's region masks (bit flags, see
:mod:`agebench.data.synthetic`) mark forehead, eye corners, nasolabial folds, hair, eyes (lids and bags) and mouth
(lips, corners, marionette lines); ``any`` is their union; :func:`attention_share`
scores a map by the share of its mass inside each region against a constant map's share (the region's area).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agebench.data.synthetic_faces import EYE_CORNERS, EYES, FOREHEAD, HAIR, MOUTH, NASOLABIAL
from agebench.errors import UserError
from agebench.report.stats import bootstrap_interval, cluster_sums

MASK_COLUMN = "mask"  # the synthetic generator's manifest column (agebench.data.synthetic)
REGIONS = {
    "forehead": FOREHEAD,
    "eye_corners": EYE_CORNERS,
    "nasolabial": NASOLABIAL,
    "hair": HAIR,
    "eyes": EYES,
    "mouth": MOUTH,
}
Reshape = Callable[[torch.Tensor], torch.Tensor]


class PredictedAge:
    """Grad-CAM target: the model's output for one image (a scalar age), so gradients explain the prediction."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output if output.ndim == 0 else output.sum()


class ExplainedAge(nn.Module):
    """The model as Grad-CAM sees it: images -> the head's differentiable age (``AgeRegressor.explained_age``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.explained_age(images)


@dataclass(frozen=True)
class CamLayer:
    """One layer to explain: a short label for figures, the module to hook, and how to make its output NCHW."""

    label: str
    module: nn.Module
    reshape: Reshape | None = None
    grid: tuple[int, int] | None = None  # the map's resolution before upsampling, when known up front


def tokens_to_grid(num_prefix_tokens: int, grid: tuple[int, int]) -> Reshape:
    """``[B, prefix + gh * gw, C]`` tokens -> ``[B, C, gh, gw]`` maps, dropping the prefix (class/register) tokens."""
    gh, gw = grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, num_prefix_tokens:]
        if patches.shape[1] != gh * gw:
            raise ValueError(
                f"{tokens.shape[1]} tokens do not fit {num_prefix_tokens} prefix tokens + a {gh}x{gw} grid; "
                "explain at the image size the model was built for"
            )
        return patches.reshape(patches.shape[0], gh, gw, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def vit_reshape(vit: nn.Module) -> tuple[Reshape, tuple[int, int]]:
    """The token reshape of a timm ViT, from its own prefix-token count and patch grid."""
    grid = tuple(int(g) for g in vit.patch_embed.grid_size)
    return tokens_to_grid(int(vit.num_prefix_tokens), grid), grid  # type: ignore[arg-type]


def _channels_first(num_chs: int) -> Reshape:
    """Some timm models (Swin, ConvNeXt-V2 variants) emit NHWC maps: put channels first when they are last."""

    def reshape(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.shape[1] != num_chs and x.shape[-1] == num_chs:
            return x.permute(0, 3, 1, 2)
        return x

    return reshape


def _is_vit(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("num_prefix_tokens", "patch_embed", "blocks")) and hasattr(
        model.patch_embed, "grid_size"
    )


def _averages_patch_tokens(vit: nn.Module) -> bool:
    """A timm ViT whose head reads the plain mean of its patch tokens (no attention pool, prefix tokens left out)."""
    return (
        getattr(vit, "global_pool", None) == "avg"
        and getattr(vit, "attn_pool", None) is None
        and not getattr(vit, "pool_include_prefix", False)
    )


# The CAM variants explain offers, by the name attention.json records. Grad-CAM (Selvaraju et al., ICCV 2017)
# weights each channel of the hooked map by its gradient averaged over positions; HiResCAM (Draelos & Carin 2020)
# multiplies gradient and activation position by position, the first-order share of each position in the
# prediction. They agree exactly where every position gets the same gradient (a map the head reads through a
# plain average: a convnet's last stage, an averaging transformer's output); where they differ (a class-token
# ViT's last block, a trunk map that a per-token norm or an encoder separates from the pool) Grad-CAM's averaged
# weights lose how much each position mattered, so comparing the two tells a reader whether a map is robust.
CAM_METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}
# Every attribution explain offers: the CAMs, and occlusion (agebench.report.occlusion), which hooks no layer and
# maps every architecture at the same input resolution.
METHODS: dict[str, str] = {**CAM_METHODS, "occlusion": "occlusion"}


MIN_CAM_GRID = 2  # a stage whose map is 1x1 can only give a uniform heat map


def _stage_for(model: nn.Module, what: str, size: tuple[int, int]) -> tuple[str, nn.Module, Reshape, int]:
    """(label, module, reshape, stride) of the deepest stage whose map is at least MIN_CAM_GRID on each side.

    At the paper's 224 px that is always the last stage (7 x 7); small CPU images (48 px: the last ConvNeXt map
    is 1 x 1) fall back to the stage before it, which still shows where the model looks.
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise UserError(f"{what}: no timm feature_info, so its last convolutional stage is unknown to Grad-CAM")
    chosen = len(info) - 1
    while chosen > 0 and min(size) // int(info[chosen].get("reduction", 1) or 1) < MIN_CAM_GRID:
        chosen -= 1
    entry = info[chosen]
    label = "last stage" if chosen == len(info) - 1 else f"stage {chosen + 1} of {len(info)}"
    stride = int(entry.get("reduction", 0) or 0)
    return label, model.get_submodule(entry["module"]), _channels_first(int(entry["num_chs"])), stride


def _divided(img_size: tuple[int, int], stride: int) -> tuple[int, int]:
    return img_size[0] // stride, img_size[1] // stride


def cam_layers(backbone: nn.Module, img_size: int | tuple[int, int], name: str = "backbone") -> list[CamLayer]:
    """The layers to explain for ``backbone`` (a registered backbone) at input size ``img_size``."""
    from agebench.models.hybrid import ConvNeXtTransformer
    from agebench.models.registry import TimmBackbone

    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if isinstance(backbone, ConvNeXtTransformer):
        token_grid = _divided(size, int(backbone.trunk.feature_info[-1]["reduction"]))
        label, stage, to_nchw, stride = _stage_for(backbone.trunk, f"hybrid trunk of {name}", size)
        trunk = CamLayer(f"trunk ({label})", stage, to_nchw, _divided(size, stride))
        layers = getattr(backbone.encoder, "layers", None)
        if not layers:  # depth 0: the trunk alone (the encoder's ablation)
            return [trunk]
        # The encoder's map lives on its token grid (the tokenised trunk stage), whatever the image size.
        reshape = tokens_to_grid(backbone.num_prefix_tokens, token_grid)
        if backbone.num_prefix_tokens == 0:  # pool="avg": the tokens the head's average reads
            return [CamLayer("encoder (output)", backbone.norm, reshape, token_grid), trunk]
        return [CamLayer("encoder (last layer)", layers[-1].norm1, reshape, token_grid), trunk]
    if isinstance(backbone, TimmBackbone):
        model = backbone.model
        if _is_vit(model):
            reshape, grid = vit_reshape(model)
            if _averages_patch_tokens(model):
                return [CamLayer("output (token average)", model.norm, reshape, grid)]
            return [CamLayer("last block", model.blocks[-1].norm1, reshape, grid)]
        label, stage, to_nchw, reduction = _stage_for(model, name, size)
        return [CamLayer(label, stage, to_nchw, _divided(size, reduction) if reduction else None)]
    raise UserError(
        f"{name}: no Grad-CAM target layer known for backbone class {type(backbone).__name__} "
        "(supported: convnext, vit, hybrid and timm: models)"
    )


def region_masks(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean map per age-cue region, plus ``any`` (their union)."""
    regions = {name: (mask & bit) > 0 for name, bit in REGIONS.items()}
    regions["any"] = (mask & sum(REGIONS.values())) > 0
    return regions


SHARE_RESAMPLES = 2000


def image_shares(maps: np.ndarray, masks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image share of map mass and area share for each key of ``[*REGIONS, "any"]``: ``(shares [n, k],
    areas [n, k], lit [N])``, over the ``n`` images that have a mask and a map with mass (``lit`` marks them)."""
    keys = [*REGIONS, "any"]
    shares, areas, lit = [], [], np.zeros(len(maps), bool)
    for i, (cam, mask) in enumerate(zip(maps, masks, strict=True)):
        total = float(cam.sum())
        if mask is None or not total > 0:
            continue
        lit[i] = True
        regions = region_masks(mask)
        shares.append([float(cam[regions[k]].sum()) / total for k in keys])
        areas.append([float(regions[k].mean()) for k in keys])
    return np.array(shares).reshape(-1, len(keys)), np.array(areas).reshape(-1, len(keys)), lit


def _intervals(values: np.ndarray, level: float) -> np.ndarray:
    """BCa bootstrap intervals ``[2, m]`` of the means of ``values`` ``[n, m]``, images as the resampling unit."""
    iv = bootstrap_interval([cluster_sums(values)], SHARE_RESAMPLES, level, np.random.default_rng(0))
    return np.stack([iv.low, iv.high])


def attention_share(maps: np.ndarray, masks: list[np.ndarray | None], level: float = 0.95) -> dict[str, Any]:
    """Mean share of map mass per region, and the regions' mean area share (a constant map's score).

    ``share_ci`` is a BCa bootstrap interval over the explained images of each mean share; ``excess_ci`` that of
    the per-image paired difference share - area, so "the model looks at age cues more than a constant map would"
    holds at ``level`` when ``excess_ci`` lies above 0. Images are the resampling unit (faces of one synthetic
    subject are treated as exchangeable; a few per subject). Needs at least 2 non-flat images.
    """
    keys = [*REGIONS, "any"]
    shares, areas, lit = image_shares(maps, masks)
    has_mask = np.array([m is not None for m in masks], bool)

    def means(values: np.ndarray) -> dict[str, float | None]:
        return {k: round(float(values[:, j].mean()), 6) if len(values) else None for j, k in enumerate(keys)}

    out: dict[str, Any] = {
        "n_images": len(shares),
        "n_flat": int((has_mask & ~lit).sum()),
        "share": means(shares),
        "uniform_baseline": means(areas),
        "share_ci": {k: None for k in keys},
        "excess_ci": {k: None for k in keys},
        "ci_level": level,
    }
    if len(shares) >= 2:
        iv = _intervals(np.concatenate([shares, shares - areas], axis=1), level)
        m = len(keys)
        for j, k in enumerate(keys):
            out["share_ci"][k] = [round(float(iv[0, j]), 6), round(float(iv[1, j]), 6)]
            out["excess_ci"][k] = [round(float(iv[0, m + j]), 6), round(float(iv[1, m + j]), 6)]
    return out


def control_difference(
    maps: np.ndarray, control: np.ndarray, masks: list[np.ndarray | None], level: float = 0.95
) -> dict[str, Any]:
    """Trained minus untrained share per region, paired by image: the model-randomisation test's effect size.

    The mean over the images where both maps carry mass of share(trained) - share(untrained twin), with a BCa
    bootstrap interval (images resampled, as in :func:`attention_share`). Above 0 at ``level``: training moved the
    map's mass into the region beyond what the architecture and the image alone put there (Adebayo et al. 2018).
    """
    keys = [*REGIONS, "any"]
    both = [i for i, m in enumerate(masks) if m is not None and maps[i].sum() > 0 and control[i].sum() > 0]
    paired = [masks[i] for i in both]
    diff = image_shares(maps[both], paired)[0] - image_shares(control[both], paired)[0]
    out: dict[str, Any] = {
        "n_images": len(diff),
        "difference": {k: round(float(diff[:, j].mean()), 6) if len(diff) else None for j, k in enumerate(keys)},
        "difference_ci": {k: None for k in keys},
        "ci_level": level,
    }
    if len(diff) >= 2:
        iv = _intervals(diff, level)
        out["difference_ci"] = {k: [round(float(iv[0, j]), 6), round(float(iv[1, j]), 6)] for j, k in enumerate(keys)}
    return out


def format_attention(entries: list[dict[str, Any]]) -> list[str]:
    """One line per entry: share inside the age-cue regions vs a constant map, for the terminal."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def interval(e: dict[str, Any]) -> str:
        ci = (e.get("share_ci") or {}).get("any")
        return f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else ""

    def excess(e: dict[str, Any]) -> str:
        ci = (e.get("excess_ci") or {}).get("any")
        if not ci:
            return ""
        verdict = "above" if ci[0] > 0 else "below" if ci[1] < 0 else "not resolved from"
        return f"; {verdict} uniform, excess CI [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points"

    def control(e: dict[str, Any]) -> str:
        vs = e.get("vs_control") or {}
        ci = (vs.get("difference_ci") or {}).get("any")
        if not ci:
            return ""
        diff = 100 * vs["difference"]["any"]
        return f"; {diff:+.1f} points over its untrained twin [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"

    def method(e: dict[str, Any]) -> str:  # entries written before agebench 0.9 have no "method": Grad-CAM
        return METHODS.get(e.get("method", "gradcam"), str(e.get("method")))

    def who(e: dict[str, Any]) -> str:
        return f"{e['model']} ({e['control']})" if e.get("control") else e["model"]

    return [
        f"{who(e)} [{e['label']}]: {pct(e['share']['any'])}{interval(e)} of {method(e)} mass in age-cue regions "
        f"(uniform map: {pct(e['uniform_baseline']['any'])}; n={e['n_images']}, flat {e.get('n_flat', 0)}"
        f"{excess(e)}{control(e)})"
        for e in entries
    ]
