"""Parameter counts and a catalogue of the registered backbones (for ``agebench models`` and reports)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agebench.models.registry import get_backbone_spec, list_backbones


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts; shared parameters are counted once."""
    total = trainable = 0
    for param in module.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return total, trainable


def describe_backbone(name: str, img_size: int = 224, head_hidden: int = 256) -> dict[str, Any]:
    """Name, source, description, ``num_features`` and parameter counts (backbone, with default head).

    Models are built on the meta device: shapes only, no memory or initialisation, so even ViT-B takes
    milliseconds. A backbone that fails to build is reported with ``error`` rather than raising, so one
    broken third-party package does not hide the others.
    """
    from agebench.models.module import build_model

    spec = get_backbone_spec(name)
    info: dict[str, Any] = {
        "name": name,
        "source": spec.source,
        "description": spec.description,
        "small": spec.small,
        "img_size": img_size,
        "num_features": None,
        "backbone_params": None,
        "params": None,
        "error": None,
    }
    try:
        with torch.device("meta"):
            backbone, head = build_model(name, img_size=img_size, head_hidden=head_hidden)
    except Exception as err:  # report, do not crash the listing
        info["error"] = f"{type(err).__name__}: {err}"
        return info
    info["num_features"] = backbone.num_features
    info["backbone_params"] = count_parameters(backbone)[0]
    info["params"] = info["backbone_params"] + count_parameters(head)[0]
    return info


def describe_backbones(img_size: int = 224, head_hidden: int = 256) -> list[dict[str, Any]]:
    """:func:`describe_backbone` for every name of :func:`list_backbones`."""
    return [describe_backbone(n, img_size=img_size, head_hidden=head_hidden) for n in list_backbones()]
