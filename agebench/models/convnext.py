"""ConvNeXt backbones (Liu et al., CVPR 2022), built from timm.

* ``convnext``: ConvNeXt-Tiny (timm ``convnext_tiny``, 27.82M parameters without classifier), the CNN
  baseline of Maroun et al. 2025 and the trunk of the hybrid; fully convolutional, so any input size works.
* ``convnext-atto``: timm ``convnext_atto`` (3.37M), same design at 1/8 the width; fast on CPU at 32-64 px,
  used for smoke runs and tests.

Both return globally average-pooled, LayerNorm-ed features (timm's ``num_classes=0`` head).
"""

from __future__ import annotations

from typing import Any

from agebench.models.registry import TimmBackbone, create_timm_backbone, register_backbone


@register_backbone(
    "convnext-atto",
    default_kwargs={"variant": "convnext_atto"},
    description="ConvNeXt-Atto (timm convnext_atto), for CPU smoke runs",
    small=True,
)
@register_backbone(
    "convnext",
    default_kwargs={"variant": "convnext_tiny"},
    description="ConvNeXt-Tiny (timm convnext_tiny), the CNN baseline",
)
def convnext(
    variant: str = "convnext_tiny", pretrained: bool = False, drop_path_rate: float = 0.0, **kwargs: Any
) -> TimmBackbone:
    """Any timm ConvNeXt ``variant``; extra kwargs go to ``timm.create_model``."""
    return create_timm_backbone(variant, pretrained=pretrained, drop_path_rate=drop_path_rate, **kwargs)
