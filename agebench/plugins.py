"""Third-party backbones and heads through entry points: listed by name without importing, loaded on use.

Shared by the backbone registry (group ``agebench.backbones``) and the head registry (``agebench.heads``), so
both list plugins and report a broken one the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from agebench.errors import UserError


def entry_points_by_name(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group``, first one per name. Not cached: packages may be installed at run time."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def load_factory(kind: str, name: str, entry_point: EntryPoint) -> Callable[..., Any]:
    """Import the providing package and return its callable; any failure is the user's, in one line."""
    try:
        factory = entry_point.load()
    except Exception as err:  # any import failure of a third-party package is the user's to fix
        raise UserError(
            f"{kind} {name!r}: cannot load entry point {entry_point.value!r} ({type(err).__name__}: {err})"
        ) from err
    if not callable(factory):
        raise UserError(f"{kind} {name!r}: entry point {entry_point.value!r} is not callable")
    return factory
