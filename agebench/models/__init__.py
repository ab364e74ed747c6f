"""Backbones, prediction heads, losses and the LightningModule that trains them.

Importing this package registers the built-in backbones (convnext, vit, hybrid and their small variants) and
the built-in heads (agebench.models.heads).
"""

from agebench.models import convnext, hybrid, vit  # noqa: F401  (registers the built-ins)
from agebench.models.heads import (
    AgeHead,
    RegressionHead,
    create_head,
    describe_heads,
    get_head_spec,
    list_heads,
    register_head,
)
from agebench.models.hybrid import ConvNeXtTransformer
from agebench.models.info import count_parameters, describe_backbone, describe_backbones
from agebench.models.losses import AdaptiveRegressionLoss, build_loss, list_losses
from agebench.models.module import AgeRegressor, build_model, split_head_config, warmup_cosine
from agebench.models.pretrained import LoadReport, load_pretrained, read_state_dict
from agebench.models.registry import (
    ENTRY_POINT_GROUP,
    BackboneSpec,
    BlockLayout,
    Regime,
    TimmBackbone,
    backbone_blocks,
    backbone_regime,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    register_backbone,
    validate_backbone,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdaptiveRegressionLoss",
    "AgeHead",
    "AgeRegressor",
    "BackboneSpec",
    "BlockLayout",
    "ConvNeXtTransformer",
    "Regime",
    "LoadReport",
    "RegressionHead",
    "TimmBackbone",
    "backbone_blocks",
    "backbone_regime",
    "build_loss",
    "build_model",
    "count_parameters",
    "create_backbone",
    "create_head",
    "describe_backbone",
    "describe_backbones",
    "describe_heads",
    "get_backbone_spec",
    "get_head_spec",
    "list_backbones",
    "list_heads",
    "list_losses",
    "load_pretrained",
    "read_state_dict",
    "register_backbone",
    "register_head",
    "split_head_config",
    "validate_backbone",
    "warmup_cosine",
]
