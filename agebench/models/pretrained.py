"""Offline loading of local weights into a backbone or a whole model.

``pretrained: true`` in a model config uses timm's own download path (needs the network or a warm HF
cache); this module is for air-gapped clusters: point ``pretrained_path`` at a local ``.safetensors`` file
or a saved state dict / Lightning checkpoint.

Pickle files are opened with ``torch.load(weights_only=True)``: tensors, containers and primitives only,
so a checkpoint from an untrusted source cannot run code. Anything else is refused.

Checkpoints from other code rarely use our module names, so key prefixes are reconciled: known wrapper
prefixes (``module.`` from DDP, ``model.``, ``backbone.``, ``_orig_mod.`` from torch.compile, ...) are
stripped from the file's keys and/or added to them, whichever combination matches the most keys. Tensors
whose shapes disagree are skipped and reported, never silently broadcast.

Foundation-model layouts (agebench 0.6) go into timm ViTs through timm's own ``checkpoint_filter_fn``
(timm.models.vision_transformer), the function timm loads its own CLIP and DINOv2 weights with:

* OpenAI CLIP and OpenCLIP with CLIP's own towers (FaRL's released files are of this kind): a ``state_dict``
  wrapper, ``visual.`` keys (``conv1``, ``transformer.resblocks``, ``ln_pre``/``ln_post``, ``proj``), a text tower;
* OpenCLIP with a timm vision tower: ``visual.trunk.`` keys;
* DINOv2 (facebookresearch/dinov2 hub files): timm-like keys plus ``mask_token`` (and ``register_tokens``).

The text tower and CLIP's joint-embedding projection are dropped and counted, never an error; a backbone key the
file does not fill is an error (the backbone would train from a half-random start). The position embedding is
resampled to the model's grid by the same filter.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from agebench.errors import UserError

log = logging.getLogger(__name__)

# Module names that wrap a model without changing it; only these are considered as key prefixes.
WRAPPER_PREFIXES = ("module", "model", "backbone", "_orig_mod", "net", "network", "encoder", "trunk", "base")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: how many tensors were copied and which keys were not."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)  # model keys left at their initial value
    unexpected: list[str] = field(default_factory=list)  # file keys that found no home
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape", skipped
    stripped_prefix: str = ""
    added_prefix: str = ""
    layout: str = ""  # a foundation-model layout read through timm's filter ("openai-clip", "dinov2", ...)
    dropped: int = 0  # tensors of the layout the backbone has no use for (a text tower, CLIP's projection)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.path}"]
        if self.layout:
            parts.append(f"({self.layout} layout; {self.dropped} text-tower / projection tensors dropped)")
        if self.stripped_prefix or self.added_prefix:
            parts.append(f"(prefix {self.stripped_prefix or '-'!r} -> {self.added_prefix or '-'!r})")
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"; {label}: {shown}")
        return " ".join(parts)


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a tensors-only pickle (plain state dict or a checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise UserError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: refused: holds Python objects beyond tensors and containers, and arbitrary pickles "
            f"can run code (torch.load weights_only=True: {first_line})"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise UserError(f"{path}: not a readable torch file ({err})") from err
    if _is_tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return obj[key]
    raise UserError(f"{path}: no state dict found (expected tensors, or one of the keys {_CONTAINER_KEYS})")


def _wrapper_prefixes(keys: list[str], depth: int = 3) -> set[str]:
    """``""`` plus every leading run of up to ``depth`` wrapper names found in ``keys``."""
    found = {""}
    for key in keys:
        parts = key.split(".")
        for n in range(1, min(depth, len(parts) - 1) + 1):
            if parts[n - 1] not in WRAPPER_PREFIXES:
                break
            found.add(".".join(parts[:n]) + ".")
    return found


def _best_mapping(file_keys: list[str], model_keys: set[str]) -> tuple[str, str, dict[str, str]]:
    """The (strip, add) prefix pair mapping the most file keys onto model keys; ties favour short prefixes."""
    best: tuple[int, int, str, str, dict[str, str]] = (-1, 0, "", "", {})
    for strip in sorted(_wrapper_prefixes(file_keys)):
        for add in sorted(_wrapper_prefixes(sorted(model_keys))):
            mapping = {k: add + k[len(strip) :] for k in file_keys if k.startswith(strip)}
            mapping = {k: v for k, v in mapping.items() if v in model_keys}
            score = (len(mapping), -(len(strip) + len(add)))
            if score > best[:2]:
                best = (score[0], score[1], strip, add, mapping)
    return best[2], best[3], best[4]


# (layout, a key that marks it, the prefix of the vision tower's keys)
FOUNDATION_LAYOUTS = (
    ("openai-clip", "visual.class_embedding", "visual."),
    ("openai-clip", "module.visual.class_embedding", "module.visual."),
    ("open-clip-timm", "visual.trunk.pos_embed", "visual.trunk."),
    ("open-clip-timm", "visual.trunk.blocks.0.norm1.weight", "visual.trunk."),
    ("open-clip-timm", "module.visual.trunk.pos_embed", "module.visual.trunk."),
    ("dinov2", "mask_token", ""),
)


def foundation_layout(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """(layout, vision-tower prefix) of a CLIP / OpenCLIP / DINOv2 file, or None for any other layout."""
    return next(((name, prefix) for name, key, prefix in FOUNDATION_LAYOUTS if key in state), None)


def _timm_vit(model: nn.Module) -> nn.Module | None:
    from timm.models.vision_transformer import VisionTransformer

    inner = getattr(model, "model", model)
    return inner if isinstance(inner, VisionTransformer) else None


def from_foundation_layout(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path):
    """``state`` in timm's ViT layout through timm's checkpoint filter, and how many tensors it dropped."""
    found = foundation_layout(state)
    assert found is not None
    layout, prefix = found
    vit = _timm_vit(model)
    if vit is None:
        raise UserError(
            f"{path}: a {layout} checkpoint loads into a timm Vision Transformer (e.g. farl-b16, "
            f"timm:vit_base_patch16_clip_224, timm:vit_small_patch14_dinov2), not into {type(model).__name__}"
        )
    from timm.models.vision_transformer import checkpoint_filter_fn

    converted = checkpoint_filter_fn(dict(state), vit)
    # What the filter leaves behind: the text tower (keys outside the vision prefix), DINOv2's mask token.
    dropped = sum(1 for k in state if not k.startswith(prefix)) + (layout == "dinov2" and "mask_token" in state)
    # CLIP's projection into the joint text-image space becomes timm's head; a backbone has none (num_classes=0).
    if not isinstance(getattr(vit, "head", None), nn.Linear):
        converted.pop("head.bias", None)  # made up by the filter (zeros): not in the file
        dropped += converted.pop("head.weight", None) is not None
    return layout, converted, dropped


def load_pretrained(model: nn.Module, path: str | Path, *, strict: bool = False) -> LoadReport:
    """Copy the weights in ``path`` into ``model`` (in place) and report what did not match.

    ``strict=True`` turns any missing, unexpected or shape-mismatched key into a :class:`UserError`.
    A file that matches no key at all is always an error: it is the wrong file.
    """
    state = read_state_dict(path)
    layout, dropped = "", 0
    if foundation_layout(state) is not None:
        layout, state, dropped = from_foundation_layout(model, state, path)
    target = model.state_dict()
    strip, add, mapping = _best_mapping(list(state), set(target))
    if not mapping:
        raise UserError(
            f"{path}: none of its {len(state)} keys match the model "
            f"(file: {', '.join(list(state)[:3])}...; model: {', '.join(list(target)[:3])}...)"
        )
    to_load: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for src, dst in mapping.items():
        if state[src].shape == target[dst].shape:
            to_load[dst] = state[src]
        else:
            mismatched.append(f"{dst}: {tuple(state[src].shape)} vs {tuple(target[dst].shape)}")
    model.load_state_dict(to_load, strict=False)
    report = LoadReport(
        path=str(path),
        loaded=len(to_load),
        missing=[k for k in target if k not in to_load],
        unexpected=[k for k in state if k not in mapping],
        mismatched=mismatched,
        stripped_prefix=strip,
        added_prefix=add,
        layout=layout,
        dropped=dropped,
    )
    if layout and (report.missing or report.mismatched):
        raise UserError(f"{path}: the {layout} checkpoint does not fill the backbone: {report.summary()}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise UserError(report.summary())
    (log.warning if report.missing or report.unexpected or report.mismatched else log.info)(report.summary())
    return report
