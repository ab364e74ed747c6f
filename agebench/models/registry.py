"""Backbone registry: one name space for built-in, timm and third-party backbones.

A backbone is anything that turns face crops into a feature vector; the age head is added separately
(`agebench.models.head`), so every backbone can be benchmarked with the same head and loss.

Backbone contract (a breaking change if it moves; the README repeats it):

* A backbone is built by a factory, ``factory(**kwargs) -> torch.nn.Module``.
* The module has an ``int`` attribute ``num_features``.
* ``forward(x)`` with ``x`` a float tensor ``[B, 3, H, W]`` returns pooled features ``[B, num_features]``.
* If the factory has a parameter named ``img_size``, it receives the training image size (an ``int``);
  backbones with size-dependent parameters (position embeddings) need it, others may ignore it.
* Built-in backbones also offer ``forward_features(x)`` (unpooled features, as in timm) for Grad-CAM.
* Optional, since agebench 0.5: ``regime(img_size) -> Regime`` says what the backbone's defining mechanism sees
  at that size: the tokens its attention mixes (patch or grid tokens, class tokens not counted) and its last
  feature map's grid. The leaderboard shows it and flags a run ``degenerate`` where the mechanism is off
  (:attr:`Regime.degenerate`); a backbone without it is shown as "unknown" and never flagged.
* Optional, since agebench 0.6: ``blocks() -> BlockLayout``, the backbone's parameters as embeddings (the stem)
  and blocks ordered from the input; what neither holds (a final norm) comes after the last block. Partial
  fine-tuning (``model.train_last_blocks``) and layer-wise lr decay (``optim.layer_decay``) need it; a backbone
  without it trains with ``model.freeze: none`` or ``backbone`` only. timm models declare it from timm's own
  ``group_matcher``; the hybrid declares its trunk stages, then its encoder layers.

Three sources of names, looked up in this order:

1. built-ins registered with :func:`register_backbone` (``convnext``, ``vit``, ``hybrid`` and small variants);
2. ``timm:<model_name>``: any timm model, built with ``num_classes=0`` so it returns pooled features;
3. entry points of the group ``agebench.backbones`` declared by installed packages, e.g. in pyproject.toml::

       [project.entry-points."agebench.backbones"]
       my-net = "my_package.backbones:make_my_net"

   Entry points are listed by name without importing them; the package is imported only when that
   backbone is built, so a broken third-party package cannot break ``agebench models`` for the others.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import EntryPoint
from typing import Any

import torch
from torch import nn

from agebench.errors import UserError
from agebench.plugins import entry_points_by_name, load_factory

ENTRY_POINT_GROUP = "agebench.backbones"
TIMM_PREFIX = "timm:"
# Built-in model families; importing each one registers its backbones.
_BUILTIN_MODULES = ("agebench.models.convnext", "agebench.models.vit", "agebench.models.hybrid")

Factory = Callable[..., nn.Module]
# Below these an architecture's defining mechanism is off: attention over < 4 tokens is nearly a per-token MLP
# (over one token exactly so), and a CNN whose last map is 1x1 pools nothing and sees no layout there.
MIN_ATTENTION_TOKENS = 4
MIN_CNN_GRID = 2


@dataclass(frozen=True)
class Regime:
    """What a backbone's defining mechanism sees at one image size (the optional ``regime`` declaration).

    ``mechanism`` is ``"attention"`` (a ViT, a hybrid's encoder: ``tokens`` is what attention mixes, class and
    register tokens not counted) or ``"convolution"`` (``tokens`` None). ``grid`` is the last feature map's
    rows x columns (a ViT's patch grid).
    """

    mechanism: str
    grid: tuple[int, int]
    tokens: int | None = None

    @property
    def degenerate(self) -> str | None:
        """Why the mechanism is switched off at this size, or None when it is on."""
        if self.mechanism == "attention" and (self.tokens or 0) < MIN_ATTENTION_TOKENS:
            return f"attention over {self.tokens} token(s) (< {MIN_ATTENTION_TOKENS})"
        if self.mechanism == "convolution" and min(self.grid) < MIN_CNN_GRID:
            return f"last feature map {self.grid[0]}x{self.grid[1]} (< {MIN_CNN_GRID}x{MIN_CNN_GRID})"
        return None

    def record(self) -> dict[str, Any]:
        """The metrics.json form (``regime``), read back by the leaderboard without importing models."""
        return {
            "mechanism": self.mechanism,
            "tokens": self.tokens,
            "grid": list(self.grid),
            "degenerate": self.degenerate,
        }


def regime_record(module: nn.Module, img_size: int) -> dict[str, Any] | None:
    """metrics.json's ``regime``: the declaration's record, or None ("unknown")."""
    regime = backbone_regime(module, img_size)
    return regime.record() if regime is not None else None


def backbone_regime(module: nn.Module, img_size: int) -> Regime | None:
    """The backbone's declared regime at ``img_size``; None ("unknown") when it declares none."""
    declare = getattr(module, "regime", None)
    if not callable(declare):
        return None
    regime = declare(img_size)
    if regime is not None and not isinstance(regime, Regime):
        raise UserError(f"backbone {type(module).__name__}: regime() must return a Regime, got {type(regime).__name__}")
    return regime


@dataclass(frozen=True)
class BlockLayout:
    """Parameter-name prefixes (relative to the backbone) of the embeddings and of each block, from the input.

    A parameter belongs to a prefix when its name equals it or continues it after a dot. Parameters under no
    prefix come after the last block (final norms): they train with the last block and at the head's rate.
    """

    embed: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]

    def layer_of(self, name: str) -> int:
        """0 for the embeddings, i + 1 for block i, ``len(blocks) + 1`` for what follows the blocks."""
        for layer, prefixes in enumerate((self.embed, *self.blocks)):
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                return layer
        return len(self.blocks) + 1


def backbone_blocks(module: nn.Module) -> BlockLayout | None:
    """The backbone's declared blocks; None when it declares none (a third-party backbone may not)."""
    declare = getattr(module, "blocks", None)
    if not callable(declare):
        return None
    layout = declare()
    if layout is not None and (not isinstance(layout, BlockLayout) or not layout.blocks):
        raise UserError(f"backbone {type(module).__name__}: blocks() must return a BlockLayout with >= 1 block")
    return layout


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about a backbone name, before building it."""

    name: str
    source: str  # "builtin", "timm" or "entry-point"
    description: str = ""
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    small: bool = False  # fast on CPU at 32-64 px: the test suite trains every small built-in
    # Where its weights come from, for a backbone that is only meaningful with them (model.pretrained_path).
    requires_pretrained_path: str | None = None
    factory: Factory | None = None
    entry_point: EntryPoint | None = None

    def load_factory(self) -> Factory:
        """The factory; for entry points this imports the providing package (lazily, on first use)."""
        if self.factory is not None:
            return self.factory
        assert self.entry_point is not None
        return load_factory("backbone", self.name, self.entry_point)


_BUILTINS: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    *,
    default_kwargs: dict[str, Any] | None = None,
    description: str = "",
    small: bool = False,
    requires_pretrained_path: str | None = None,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(**kwargs) -> nn.Module`` under ``name``.

    ``default_kwargs`` are merged under the caller's kwargs, so one factory can serve several sizes.
    """
    if name.startswith(TIMM_PREFIX) or not name:
        raise ValueError(f"invalid backbone name {name!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _BUILTINS:
            raise ValueError(f"backbone {name!r} is already registered")
        _BUILTINS[name] = BackboneSpec(
            name=name,
            source="builtin",
            description=description or (inspect.getdoc(factory) or "").split("\n")[0],
            default_kwargs=dict(default_kwargs or {}),
            small=small,
            requires_pretrained_path=requires_pretrained_path,
            factory=factory,
        )
        return factory

    return decorator


def _ensure_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _entry_points() -> dict[str, EntryPoint]:
    return entry_points_by_name(ENTRY_POINT_GROUP)


def list_backbones() -> list[str]:
    """Built-in names, then entry-point names (a built-in wins a name clash); ``timm:*`` is implicit."""
    _ensure_builtins()
    names = list(_BUILTINS)
    names += sorted(n for n in _entry_points() if n not in _BUILTINS)
    return names


def get_backbone_spec(name: str) -> BackboneSpec:
    """Resolve a name to its spec without building anything; unknown names are a :class:`UserError`."""
    _ensure_builtins()
    if name in _BUILTINS:
        return _BUILTINS[name]
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX) :]
        import timm

        if not timm.is_model(timm_name):
            raise UserError(f"unknown timm model {timm_name!r} in backbone {name!r} (see timm.list_models())")
        return BackboneSpec(name=name, source="timm", description=f"timm model {timm_name}")
    eps = _entry_points()
    if name in eps:
        ep = eps[name]
        return BackboneSpec(name=name, source="entry-point", description=f"entry point {ep.value}", entry_point=ep)
    raise UserError(
        f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}; "
        f"or 'timm:<model_name>' for any timm model"
    )


def _accepts(factory: Factory, param: str) -> bool:
    try:
        return param in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def create_backbone(name: str, *, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` and check it honours the contract.

    ``img_size`` is passed only to factories that declare it (and to timm models that accept it), so
    third-party factories need not know about it.
    """
    spec = get_backbone_spec(name)
    if spec.source == "timm":
        factory: Factory = partial(create_timm_backbone, name[len(TIMM_PREFIX) :], img_size=img_size)
        call_kwargs = dict(kwargs)
    else:
        factory = spec.load_factory()
        call_kwargs = {**spec.default_kwargs, **kwargs}
        if img_size is not None and _accepts(factory, "img_size"):
            call_kwargs["img_size"] = img_size
    try:
        module = factory(**call_kwargs)
    except TypeError as err:  # almost always a misspelt or unsupported model kwarg in the user's config
        raise UserError(f"backbone {name!r}: rejected arguments {sorted(call_kwargs)} ({err})") from err
    validate_backbone(module, name)
    return module


def validate_backbone(module: object, name: str) -> None:
    """Fail early and in one line when a factory breaks the contract (not deep inside a training step)."""
    if not isinstance(module, nn.Module):
        raise UserError(f"backbone {name!r}: factory returned {type(module).__name__}, not a torch.nn.Module")
    num_features = getattr(module, "num_features", None)
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
        raise UserError(
            f"backbone {name!r}: module {type(module).__name__} needs a positive int attribute "
            f"'num_features' (got {num_features!r})"
        )


class TimmBackbone(nn.Module):
    """A timm model built with ``num_classes=0``, exposing the width of its pooled output.

    The wrapper exists because timm's ``num_features`` is the width *before* some heads (e.g. MobileNetV3's
    ``conv_head``), while the contract needs the width of what ``forward`` returns: ``head_hidden_size``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def blocks(self) -> BlockLayout | None:
        """From timm's own ``group_matcher(coarse=False)`` (what ``timm.optim.param_groups_layer_decay`` uses):
        its first group is the stem; trailing groups of 1-D tensors only (a final norm) follow the blocks; the
        groups between are the blocks (a ViT's transformer blocks; a ConvNeXt's blocks, each stage's downsampling
        with its first block). None for a timm model without a group matcher."""
        matcher = getattr(self.model, "group_matcher", None)
        if not callable(matcher):
            return None
        from timm.models import group_parameters

        groups = list(group_parameters(self.model, matcher(coarse=False)).values())
        shapes = dict(self.model.named_parameters())
        while len(groups) > 2 and all(shapes[n].ndim <= 1 for n in groups[-1]):
            groups.pop()
        if len(groups) < 2:
            return None
        named = [tuple(f"model.{n}" for n in g) for g in groups]
        return BlockLayout(embed=named[0], blocks=tuple(named[1:]))

    def regime(self, img_size: int) -> Regime | None:
        """Declared from timm's own description: a ViT's patch grid, a convnet's last ``feature_info`` stride.

        Patch-embedding convolutions and ConvNeXt's strided stems have no padding, so the grid is the floor of
        size / stride; a model that is neither (no patch embedding, no ``feature_info``) is "unknown".
        """
        patch_embed = getattr(self.model, "patch_embed", None)
        patch = getattr(patch_embed, "patch_size", None)
        if patch is not None and hasattr(self.model, "blocks"):
            ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
            grid = (img_size // ph, img_size // pw)
            return Regime(mechanism="attention", grid=grid, tokens=grid[0] * grid[1])
        info = getattr(self.model, "feature_info", None)
        if info:
            stride = int(info[-1]["reduction"])
            return Regime(mechanism="convolution", grid=(max(1, img_size // stride),) * 2)
        return None


def create_timm_backbone(
    model_name: str, *, img_size: int | None = None, pretrained: bool = False, **kwargs: Any
) -> TimmBackbone:
    """Build any timm model as a pooled-feature backbone.

    ``img_size`` is forwarded to models whose constructor takes it (ViTs, where it sizes the position
    embedding); CNNs reject it with a TypeError and are built without it.
    """
    from agebench.models.weights import create_timm_model

    kwargs = {"num_classes": 0, "pretrained": pretrained, **kwargs}
    if img_size is not None:
        try:
            return TimmBackbone(create_timm_model(model_name, img_size=img_size, **kwargs))
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return TimmBackbone(create_timm_model(model_name, **kwargs))
