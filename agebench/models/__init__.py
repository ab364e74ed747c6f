"""Backbones, the shared age head, losses and the LightningModule that trains them.

Importing this package registers the built-in backbones (convnext, vit, hybrid and their small variants).
"""

from agebench.models import convnext, hybrid, vit  # noqa: F401  (registers the built-ins)
from agebench.models.head import RegressionHead
from agebench.models.hybrid import ConvNeXtTransformer
from agebench.models.info import count_parameters, describe_backbone, describe_backbones
from agebench.models.losses import AdaptiveRegressionLoss, build_loss, list_losses
from agebench.models.module import AgeRegressor, build_model, warmup_cosine
from agebench.models.pretrained import LoadReport, load_pretrained, read_state_dict
from agebench.models.registry import (
    ENTRY_POINT_GROUP,
    BackboneSpec,
    TimmBackbone,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    register_backbone,
    validate_backbone,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdaptiveRegressionLoss",
    "AgeRegressor",
    "BackboneSpec",
    "ConvNeXtTransformer",
    "LoadReport",
    "RegressionHead",
    "TimmBackbone",
    "build_loss",
    "build_model",
    "count_parameters",
    "create_backbone",
    "describe_backbone",
    "describe_backbones",
    "get_backbone_spec",
    "list_backbones",
    "list_losses",
    "load_pretrained",
    "read_state_dict",
    "register_backbone",
    "validate_backbone",
    "warmup_cosine",
]
