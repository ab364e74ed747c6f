"""Pretrained timm weights on machines without network: find them locally, fail in one line, or fetch ahead.

Cluster compute nodes are usually offline, and the paper configs set ``pretrained: true``. Left alone, timm
asks the Hugging Face hub, retries for ~45 s and ends in a long traceback. Every timm model agebench builds
goes through :func:`create_timm_model`, which, when weights are wanted, looks in this order:

1. ``model.weights_dir`` (filled by ``agebench weights fetch MODEL... --to DIR`` on a machine with network):
   ``DIR/<architecture>.<tag>.safetensors``, loaded by timm's own ``pretrained_cfg_overlay={"file": ...}``
   path, so timm's key filters and position-embedding resampling still apply;
2. the local Hugging Face cache (the file timm would download, if it is already there);
3. the hub, only when it answers a 3 s TCP connect (never with ``HF_HUB_OFFLINE=1``);

and otherwise raises one :class:`~agebench.errors.UserError` that names the model, the weights and the two
ways out (``model.pretrained_path``, or fetching ahead).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from agebench.errors import UserError

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repo, in its order
LOCAL_SUFFIXES = (".safetensors", ".bin", ".pth")
INDEX = "weights.json"

_WEIGHTS_DIR: ContextVar[Path | None] = ContextVar("agebench_weights_dir", default=None)
_MODEL_NAME: ContextVar[str | None] = ContextVar("agebench_model_name", default=None)
RECORDED: ContextVar[list[str] | None] = ContextVar("agebench_timm_names", default=None)


@dataclass(frozen=True)
class WeightSpec:
    """The pretrained weights timm would load for one timm model name."""

    architecture: str
    tag: str
    hf_hub_id: str | None
    url: str | None

    @property
    def key(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture


def weight_spec(timm_name: str) -> WeightSpec:
    """What ``timm.create_model(timm_name, pretrained=True)`` would load; UserError if there is nothing."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm model {timm_name!r} has no pretrained weights; set pretrained: false")
    architecture, _, tag = timm_name.partition(".")
    return WeightSpec(architecture, cfg.tag or tag, cfg.hf_hub_id or None, cfg.url or None)


def local_file(spec: WeightSpec, weights_dir: str | os.PathLike[str] | None) -> Path | None:
    """``weights_dir/<key><suffix>`` if present."""
    if weights_dir is None:
        return None
    for suffix in LOCAL_SUFFIXES:
        path = Path(weights_dir) / f"{spec.key}{suffix}"
        if path.is_file():
            return path
    return None


def cached_file(spec: WeightSpec) -> Path | None:
    """The hub file in the local Hugging Face cache, if it is there (no network call)."""
    if not spec.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in HUB_FILES:
        found = try_to_load_from_cache(spec.hf_hub_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=4)
def _can_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """False under ``HF_HUB_OFFLINE=1``; else whether the hub's host accepts a TCP connection (cached)."""
    return not _offline_flag() and _can_connect(hub_host(), 443, timeout)


def where(spec: WeightSpec, weights_dir: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """('weights_dir' | 'hf-cache' | 'missing', file) for the weights of ``spec``."""
    if (path := local_file(spec, weights_dir)) is not None:
        return "weights_dir", path
    if (path := cached_file(spec)) is not None:
        return "hf-cache", path
    return "missing", None


def offline_message(spec: WeightSpec, weights_dir: Path | None) -> str:
    model = _MODEL_NAME.get() or spec.architecture
    source = spec.hf_hub_id and f"Hugging Face {spec.hf_hub_id}" or spec.url
    looked = f"not in model.weights_dir {weights_dir}" if weights_dir else "no model.weights_dir set"
    reason = "HF_HUB_OFFLINE=1" if _offline_flag() else f"{hub_host()} cannot be reached"
    return (
        f"model {model!r}: pretrained=true wants the timm weights {spec.key} ({source}); {looked}, not in the "
        f"Hugging Face cache, and {reason}. Either set model.pretrained_path to a local weights file, or fetch "
        f"ahead on a machine with network: `agebench weights fetch {model} --to DIR`, then set model.weights_dir=DIR"
    )


def pretrained_kwargs(timm_name: str) -> dict[str, Any]:
    """Extra ``timm.create_model`` kwargs that make ``pretrained=True`` load from a local file when one is
    known; {} to let timm download; UserError when neither is possible."""
    spec = weight_spec(timm_name)
    weights_dir = _WEIGHTS_DIR.get()
    _, path = where(spec, weights_dir)
    if path is not None:
        return {"pretrained_cfg_overlay": {"file": str(path)}}
    if hub_reachable():
        return {}
    raise UserError(offline_message(spec, weights_dir))


def create_timm_model(name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the lookup order of this module for pretrained weights."""
    import timm

    recorded = RECORDED.get()
    if recorded is not None:
        recorded.append(name)
    if pretrained:
        kwargs = {**kwargs, **pretrained_kwargs(name)}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as err:  # huggingface_hub's errors derive from OSError (e.g. LocalEntryNotFoundError)
        if not pretrained:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{offline_message(weight_spec(name), _WEIGHTS_DIR.get())} ({first})") from None


@contextlib.contextmanager
def weights_source(model_name: str, weights_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    """While building ``model_name``: where local weights are, and the name errors should use."""
    tokens = (_WEIGHTS_DIR.set(Path(weights_dir) if weights_dir else None), _MODEL_NAME.set(model_name))
    try:
        yield
    finally:
        _WEIGHTS_DIR.reset(tokens[0])
        _MODEL_NAME.reset(tokens[1])


# ---------------------------------------------------------------- fetching ahead (on a machine with network)


def download_hub_file(spec: WeightSpec) -> Path:
    """The weights file from the hub (through the Hugging Face cache); the network is needed."""
    from huggingface_hub import hf_hub_download

    if not spec.hf_hub_id:
        raise UserError(f"{spec.key}: weights only at {spec.url}, not on the Hugging Face hub; download by hand")
    errors = []
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(spec.hf_hub_id, filename))
        except Exception as err:  # noqa: BLE001 - try the next file name; all failures are reported below
            errors.append(f"{filename}: {type(err).__name__}")
    raise UserError(f"cannot download {spec.hf_hub_id} ({'; '.join(errors)}); is there network here?")
