"""Atomic file writes (temp file in the same folder + rename): a crash never leaves half a result behind.

:func:`check_writable_dir` and :func:`check_writable_file` say, before any work, whether such a write can succeed:
a command checks its ``--out`` with them first, so a typo costs a line, not a model load and a prediction run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agebench.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path`` in one rename, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as any file
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable(folder: Path, subject: str) -> str | None:
    """Why nothing can be written in ``folder`` (None: it can); ``subject`` is how the reason names the folder.

    ``os.access`` says yes to root everywhere, so the folder that holds (or would hold) it is also probed by
    making and removing a temp folder: that is what tells /proc or a read-only mount. Nothing is left behind.
    """
    if folder.exists():
        if not folder.is_dir():
            return f"{subject}exists and is not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{subject}folder is not writable"
        ancestor = folder
    else:
        ancestor = folder.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"cannot be created: {ancestor} is not a folder"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot be created: {ancestor} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".agebench-probe-", dir=ancestor))
    except OSError as err:
        why = err.strerror or str(err)
        return (
            f"{subject}folder is not writable ({why})"
            if ancestor == folder
            else f"cannot be created in {ancestor} ({why})"
        )
    return None


def check_writable_dir(path: str | os.PathLike[str], name: str | None = None) -> None:
    """``path`` is a writable folder, or can be made (its nearest existing ancestor is a writable folder).

    Raises UserError ``"<name>: <why>"``, ``name`` defaulting to the path: what a command checks its output
    folder with before any work. Creates nothing.
    """
    problem = _unwritable(Path(path).expanduser().absolute(), "")
    if problem:
        raise UserError(f"{path if name is None else name}: {problem}")


def check_writable_file(path: str | os.PathLike[str], name: str | None = None) -> None:
    """``path`` can be written by :func:`atomic_open`: it is not a folder, and its folder is writable or can be
    made. Raises UserError ``"<name>: <why>"`` (``name`` defaults to the path). Creates nothing."""
    p = Path(path).expanduser().absolute()
    name = str(path) if name is None else name
    if p.is_dir():
        raise UserError(f"{name}: is a folder; give a file name")
    if p.parent.exists() and not p.parent.is_dir():
        raise UserError(f"{name}: {p.parent} is not a folder")
    problem = _unwritable(p.parent, f"its folder {p.parent} ")
    if problem:
        raise UserError(f"{name}: {problem}")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
