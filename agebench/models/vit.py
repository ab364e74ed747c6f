"""Vision Transformer backbones (Dosovitskiy et al., ICLR 2021), built from timm.

* ``vit``: ViT-B/16 (timm ``vit_base_patch16_224``, 85.80M parameters without classifier). Maroun et al.
  2025 report a plain "ViT" baseline (MAE 2.47 on MORPH II) next to ConvNeXt-Tiny and the hybrid; ViT-B/16
  is what "ViT" means in that literature (the original paper's reference model, the usual ImageNet-21k
  checkpoint), so it is the faithful baseline even though it is 3x the size of ConvNeXt-Tiny. Smaller
  ViTs are one ``variant=`` away (e.g. ``vit_small_patch16_224``).
* ``vit-tiny``: ViT-Ti widths (192 wide, 12 blocks, 3 heads) with 8x8 patches instead of 16x16, so that
  32-64 px images still give 16-64 tokens; fast on CPU, for smoke runs and tests.

``img_size`` sizes the learned position embedding (timm resamples pretrained ones to it), so the model
is built for the size it is trained at; ``dynamic_img_size=True`` additionally lets one model accept
other sizes at run time by interpolating the embedding on the fly. Features are the class token after
the final norm (timm's ``num_classes=0`` head).
"""

from __future__ import annotations

from typing import Any

from agebench.models.registry import TimmBackbone, create_timm_backbone, register_backbone


@register_backbone(
    "vit-tiny",
    default_kwargs={"variant": "vit_tiny_patch16_224", "patch_size": 8},
    description="ViT-Ti widths with 8x8 patches, for CPU smoke runs",
    small=True,
)
@register_backbone(
    "vit",
    default_kwargs={"variant": "vit_base_patch16_224"},
    description="ViT-B/16 (timm vit_base_patch16_224), the transformer baseline",
)
def vit(
    variant: str = "vit_base_patch16_224",
    img_size: int = 224,
    patch_size: int | None = None,
    pretrained: bool = False,
    drop_path_rate: float = 0.0,
    dynamic_img_size: bool = False,
    **kwargs: Any,
) -> TimmBackbone:
    """Any timm ViT ``variant`` at ``img_size``; ``patch_size`` overrides the variant's patch size."""
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    return create_timm_backbone(
        variant,
        img_size=img_size,
        pretrained=pretrained,
        drop_path_rate=drop_path_rate,
        dynamic_img_size=dynamic_img_size,
        **kwargs,
    )
