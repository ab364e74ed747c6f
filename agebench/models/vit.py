"""Vision Transformer backbones (Dosovitskiy et al., ICLR 2021), built from timm.

* ``vit``: ViT-B/16 (timm ``vit_base_patch16_224``, 85.80M parameters without classifier). Maroun et al.
  2025 report a plain "ViT" baseline (MAE 2.47 on MORPH II) next to ConvNeXt-Tiny and the hybrid; ViT-B/16
  is what "ViT" means in that literature (the original paper's reference model, the usual ImageNet-21k
  checkpoint), so it is the faithful baseline even though it is 3x the size of ConvNeXt-Tiny. Smaller
  ViTs are one ``variant=`` away (e.g. ``vit_small_patch16_224``).
* ``vit-tiny``: ViT-Ti widths (192 wide, 12 blocks, 3 heads) with 8x8 patches instead of 16x16, so that
  32-64 px images still give 16-64 tokens; fast on CPU, for smoke runs and tests.

* ``farl-b16``: FaRL (Zheng et al., "General Facial Representation Learning in a Visual-Linguistic Manner",
  CVPR 2022), a CLIP ViT-B/16 image tower (timm ``vit_base_patch16_clip_quickgelu_224``: OpenAI CLIP's QuickGELU,
  pre-norm, class-token features after ``ln_post``; 85.8M parameters without CLIP's projection) pretrained on
  LAION-Face 20M. The face-pretrained backbone of Paplham & Franc (CVPR 2024), which beat every specialised
  age-estimation method with a small MLP head. It needs ``model.pretrained_path``: the released files
  (``FaRL-Base-Patch16-LAIONFace20M-ep16.pth`` / ``-ep64.pth``, https://github.com/FacePerceiver/FaRL, whose
  README links the downloads) are OpenAI-CLIP checkpoints, read by :mod:`agebench.models.pretrained`. Licence: the
  repository's code is MIT-licensed as far as we know (not verified offline: read its LICENSE); the weights are
  trained on LAION-Face, a subset of LAION-400M (CC-BY 4.0 metadata, images under their owners' rights): check
  FaRL's terms before use beyond research. ``pretrained: true`` is refused, as timm's
  weights for this architecture are OpenAI's CLIP, not FaRL.

``img_size`` sizes the learned position embedding (timm resamples pretrained ones to it), so the model
is built for the size it is trained at; ``dynamic_img_size=True`` additionally lets one model accept
other sizes at run time by interpolating the embedding on the fly. Features are the class token after
the final norm (timm's ``num_classes=0`` head).
"""

from __future__ import annotations

from typing import Any

from agebench.errors import UserError
from agebench.models.registry import TimmBackbone, create_timm_backbone, register_backbone

FARL_SOURCE = "https://github.com/FacePerceiver/FaRL (FaRL-Base-Patch16-LAIONFace20M-ep64.pth)"


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


@register_backbone(
    "farl-b16",
    description="FaRL ViT-B/16 (CLIP image tower, LAION-Face), needs model.pretrained_path",
    requires_pretrained_path=FARL_SOURCE,
)
def farl_b16(img_size: int = 224, pretrained: bool = False, drop_path_rate: float = 0.0, **kwargs: Any) -> TimmBackbone:
    """FaRL's image tower at ``img_size`` (timm resamples the 14x14 position grid of 224 px to it)."""
    if pretrained:
        raise UserError(
            "farl-b16: pretrained: true would load OpenAI's CLIP weights, not FaRL's; set pretrained: false and "
            f"model.pretrained_path to FaRL's released file ({FARL_SOURCE})"
        )
    return create_timm_backbone(
        "vit_base_patch16_clip_quickgelu_224", img_size=img_size, drop_path_rate=drop_path_rate, **kwargs
    )
