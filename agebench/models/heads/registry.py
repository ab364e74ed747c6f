"""Head registry: built-in and third-party prediction heads under one name space, like the backbones.

Head contract (a breaking change if it moves; the README repeats it):

* A head is built by a factory ``factory(num_features, age_range, **kwargs) -> torch.nn.Module``;
  ``age_range`` is ``(min_age, max_age)`` in whole years (from the config, else the training split's
  floor/ceil). A class is a factory.
* The module has ``forward(features [B, num_features]) -> raw``, ``loss(raw, ages [B]) -> scalar`` and
  ``decode(raw) -> ages [B]`` in years; optionally ``posterior(raw) -> [B, K] | None`` over the integer ages and
  ``explained_age(raw)`` (a differentiable age for Grad-CAM; ``decode`` when absent).
* Settings from elsewhere in the config reach a factory only if it names the parameter (as backbones get
  ``img_size``): ``hidden`` and ``dropout`` (``model.head_hidden``/``head_dropout``: the shared MLP trunk),
  ``loss`` and ``loss_kwargs`` (``optim.loss``/``loss_kwargs``), ``age_mean`` and ``age_std`` (the training
  split's, when ``optim.standardize_targets``). Keys in ``model.head`` win over them.

Two sources of names: built-ins registered with :func:`register_head`, then entry points of the group
``agebench.heads`` (listed by name without importing; the package is imported only when the head is used, and a
package that fails to import is a one-line :class:`UserError`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

from torch import nn

from agebench.errors import UserError
from agebench.plugins import entry_points_by_name, load_factory

ENTRY_POINT_GROUP = "agebench.heads"
DEFAULT_HEAD = "regression"
# Importing each registers its heads, in the order `agebench heads` lists them.
_BUILTIN_MODULES = (
    "agebench.models.heads.regression",
    "agebench.models.heads.softmax",
    "agebench.models.heads.ordinal",
    "agebench.models.heads.unimodal",
)
# Context parameters a factory may name, and where the value comes from (for `agebench heads`).
CONTEXT_SOURCES = {
    "hidden": "model.head_hidden",
    "dropout": "model.head_dropout",
    "loss": "optim.loss",
    "loss_kwargs": "optim.loss_kwargs",
    "age_mean": "training split (optim.standardize_targets)",
    "age_std": "training split (optim.standardize_targets)",
}
_POSITIONAL = ("num_features", "age_range")

HeadFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class HeadSpec:
    """What the registry knows about a head name, before building it."""

    name: str
    source: str  # "builtin" or "entry-point"
    description: str = ""
    factory: HeadFactory | None = None
    entry_point: EntryPoint | None = None

    def load_factory(self) -> HeadFactory:
        """The factory; for entry points this imports the providing package (lazily, on first use)."""
        if self.factory is not None:
            return self.factory
        assert self.entry_point is not None
        return load_factory("head", self.name, self.entry_point)


_BUILTINS: dict[str, HeadSpec] = {}


def register_head(name: str, *, description: str = "") -> Callable[[HeadFactory], HeadFactory]:
    """Decorator registering a head factory (usually an :class:`~agebench.models.heads.base.AgeHead` class)."""
    if not name or "+" in name or "/" in name:
        raise ValueError(f"invalid head name {name!r}")  # '+' joins backbone and head in result folders

    def decorator(factory: HeadFactory) -> HeadFactory:
        if name in _BUILTINS:
            raise ValueError(f"head {name!r} is already registered")
        if isinstance(factory, type):
            factory.name = name  # type: ignore[attr-defined]
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _BUILTINS[name] = HeadSpec(name=name, source="builtin", description=doc, factory=factory)
        return factory

    return decorator


def _ensure_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _entry_points() -> dict[str, EntryPoint]:
    return entry_points_by_name(ENTRY_POINT_GROUP)


def list_heads() -> list[str]:
    """Built-in names in registration order, then entry-point names (a built-in wins a name clash)."""
    _ensure_builtins()
    return list(_BUILTINS) + sorted(n for n in _entry_points() if n not in _BUILTINS)


def get_head_spec(name: str) -> HeadSpec:
    """Resolve a name without building anything; an unknown name is a one-line :class:`UserError`."""
    _ensure_builtins()
    if name in _BUILTINS:
        return _BUILTINS[name]
    eps = _entry_points()
    if name in eps:
        ep = eps[name]
        return HeadSpec(name=name, source="entry-point", description=f"entry point {ep.value}", entry_point=ep)
    raise UserError(f"unknown head {name!r}; registered: {', '.join(list_heads())}")


def head_parameters(factory: HeadFactory) -> dict[str, inspect.Parameter]:
    """The factory's keyword parameters (``num_features`` and ``age_range`` excluded), in signature order."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in params.items() if p.kind in kinds and n not in _POSITIONAL}


def _takes_any_kwarg(factory: HeadFactory) -> bool:
    try:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return True


def resolve_head_kwargs(name: str, kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting the factory of ``name`` will run with: its signature's defaults, then the context values it
    names, then the user's (which win). Stored in checkpoints and metrics.json, so a later change of a default
    cannot change what a reloaded model is. An argument the factory does not take is a one-line UserError."""
    factory = get_head_spec(name).load_factory()
    params = head_parameters(factory)
    if not _takes_any_kwarg(factory):
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown:
            accepted = ", ".join(params) or "none"
            raise UserError(f"head {name!r}: unknown argument(s) {', '.join(unknown)} (accepts: {accepted})")
    resolved = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    resolved.update({k: v for k, v in context.items() if k in params})
    resolved.update(kwargs)
    return resolved


def create_head(name: str, num_features: int, age_range: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
    """Build head ``name`` on ``num_features`` features and check it honours the contract."""
    factory = get_head_spec(name).load_factory()
    rng = None if age_range is None else tuple(age_range)
    try:
        head = factory(num_features, rng, **kwargs)
    except TypeError as err:  # a misspelt or unsupported argument, usually
        raise UserError(f"head {name!r}: rejected arguments {sorted(kwargs)} ({err})") from err
    validate_head(head, name)
    return head


def validate_head(head: object, name: str) -> None:
    """Fail early and in one line when a factory breaks the contract (not deep inside a training step)."""
    if not isinstance(head, nn.Module):
        raise UserError(f"head {name!r}: factory returned {type(head).__name__}, not a torch.nn.Module")
    missing = [m for m in ("loss", "decode") if not callable(getattr(head, m, None))]
    if missing:
        raise UserError(f"head {name!r}: module {type(head).__name__} lacks method(s) {', '.join(missing)}")


def head_context(
    *,
    hidden: int = 256,
    dropout: float = 0.0,
    loss: str = "adaptive",
    loss_kwargs: Mapping[str, Any] | None = None,
    age_mean: float = 0.0,
    age_std: float = 1.0,
) -> dict[str, Any]:
    """The context values (see the module docstring) as one mapping, with the config's defaults."""
    return {
        "hidden": hidden,
        "dropout": dropout,
        "loss": loss,
        "loss_kwargs": dict(loss_kwargs or {}),
        "age_mean": float(age_mean),
        "age_std": float(age_std),
    }


def check_head(
    name: str, kwargs: Mapping[str, Any], age_range: Sequence[float] | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate a head config before any training: builds it once on 8 features (cheap), raising UserError.

    Without a configured range a placeholder 0..100 stands in, so value errors (sigma <= 0...) surface here too.
    """
    resolved = resolve_head_kwargs(name, kwargs, context)
    create_head(name, 8, age_range if age_range is not None else (0, 100), **resolved)
    return resolved


def _default_text(param: inspect.Parameter) -> Any:
    if param.default is inspect.Parameter.empty:
        return None
    value = param.default
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def describe_head(name: str) -> dict[str, Any]:
    """Name, source, description and parameters (default, and where context values come from) of one head.

    Entry-point heads are imported to read their signature; one that fails is reported with ``error``.
    """
    spec = get_head_spec(name)
    info: dict[str, Any] = {
        "name": name,
        "source": spec.source,
        "description": spec.description,
        "uses_age_range": None,
        "parameters": [],
        "error": None,
    }
    try:
        factory = spec.load_factory()
    except UserError as err:
        info["error"] = str(err)
        return info
    if spec.source == "entry-point":
        info["description"] = (inspect.getdoc(factory) or "").split("\n")[0] or spec.description
    info["uses_age_range"] = getattr(factory, "uses_age_range", None)
    for pname, param in head_parameters(factory).items():
        info["parameters"].append({"name": pname, "default": _default_text(param), "from": CONTEXT_SOURCES.get(pname)})
    return info


def describe_heads() -> list[dict[str, Any]]:
    return [describe_head(n) for n in list_heads()]
