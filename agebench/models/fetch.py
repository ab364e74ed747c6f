"""The pretrained weights a registered backbone needs: which timm weights (:func:`timm_names`), whether this machine
can load them (:func:`ensure_available`), and fetching them ahead (:func:`fetch`, ``agebench weights fetch``).

Above the registry (it builds backbones to see what they load); :mod:`agebench.models.weights`, which the
registry's timm models load through, is below it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agebench import atomic
from agebench.hashing import file_sha256
from agebench.models.registry import create_backbone
from agebench.models.weights import (
    INDEX,
    LOCAL_SUFFIXES,
    RECORDED,
    WeightSpec,
    download_hub_file,
    local_file,
    pretrained_kwargs,
    weight_spec,
    weights_source,
)


def timm_names(model_name: str, **kwargs: Any) -> list[str]:
    """The timm models (with the weights they would load) that backbone ``model_name`` is built from.

    Found by building it without weights and recording every :func:`create_timm_model` call.
    """
    kwargs.pop("pretrained", None)
    token = RECORDED.set([])
    try:
        create_backbone(model_name, **kwargs)
        return list(dict.fromkeys(RECORDED.get() or []))
    finally:
        RECORDED.reset(token)


def ensure_available(model_name: str, weights_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
    """UserError (the one :func:`pretrained_kwargs` would raise mid-build) if ``pretrained=True`` on
    ``model_name`` could not get its weights here; for checking a whole bench before its first cell."""
    with weights_source(model_name, weights_dir):
        for name in timm_names(model_name, **kwargs):
            pretrained_kwargs(name)


def fetch(
    models: list[str],
    to: str | os.PathLike[str],
    *,
    download: Callable[[WeightSpec], Path] = download_hub_file,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Put the weights every listed agebench model needs into ``to`` and update ``to/weights.json``."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    index_file = to / INDEX
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    for model in models:
        for name in timm_names(model):
            spec = weight_spec(name)
            present = local_file(spec, to)
            if present is None:
                source = download(spec)
                present = to / f"{spec.key}{source.suffix if source.suffix in LOCAL_SUFFIXES else '.bin'}"
                tmp = present.with_name(f".{present.name}.part")
                shutil.copyfile(source, tmp)
                os.replace(tmp, present)
                log(f"fetched {spec.key} for {model} -> {present}")
            else:
                log(f"{spec.key} for {model}: already in {to}")
            entry = index.setdefault(spec.key, {"hf_hub_id": spec.hf_hub_id, "url": spec.url, "models": []})
            entry["file"] = present.name
            entry["sha256"] = file_sha256(present)
            entry["models"] = sorted({*entry["models"], model})
    atomic.write_json(index_file, dict(sorted(index.items())))
    return index
