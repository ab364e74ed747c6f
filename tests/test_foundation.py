"""Foundation-model weight layouts (issue 24): OpenAI CLIP / OpenCLIP (FaRL's kind of file, text tower included),
OpenCLIP with a timm tower, DINOv2 and timm, fabricated from small ViTs in the published key layouts (never
downloaded), load with no missing backbone key and give the features of the model they were made from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agebench.errors import UserError
from agebench.models import create_backbone, get_backbone_spec, load_pretrained

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IMG = 32
SMALL = {"img_size": IMG, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
CLIP = ("timm:vit_base_patch16_clip_quickgelu_224", SMALL)
DINO = ("timm:vit_small_patch14_dinov2", {**SMALL, "init_values": 1e-5})


def build(spec: tuple[str, dict], seed: int):
    torch.manual_seed(seed)
    name, kwargs = spec
    return create_backbone(name, **kwargs).eval()


def to_openai_clip(timm_state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """timm ViT keys -> OpenAI CLIP's visual tower (the inverse of timm's _convert_openai_clip), by hand."""
    swaps = [
        ("patch_embed.proj", "conv1"), ("blocks.", "transformer.resblocks."), ("norm_pre", "ln_pre"),
        ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"), ("norm1", "ln_1"), ("norm2", "ln_2"),
    ]  # fmt: skip
    out = {}
    for key, value in timm_state.items():
        if key == "cls_token":
            out[f"{prefix}class_embedding"] = value[0, 0]
            continue
        if key == "pos_embed":
            out[f"{prefix}positional_embedding"] = value[0]
            continue
        if key.startswith("norm."):
            out[prefix + key.replace("norm.", "ln_post.")] = value
            continue
        for a, b in swaps:
            key = key.replace(a, b)
        out[prefix + key] = value
    width = timm_state["cls_token"].shape[-1]
    out[f"{prefix}proj"] = torch.randn(width, 16)  # CLIP's projection into the joint space
    return out


def text_tower(width: int = 24) -> dict[str, torch.Tensor]:
    return {
        "token_embedding.weight": torch.randn(100, width),
        "positional_embedding": torch.randn(8, width),
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(3 * width, width),
        "transformer.resblocks.0.ln_1.weight": torch.ones(width),
        "ln_final.weight": torch.ones(width),
        "text_projection": torch.randn(width, 16),
        "logit_scale": torch.tensor(4.6),
    }


def inner_state(backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.model.state_dict().items()}


def openai_clip(source) -> dict:
    return {"state_dict": {**to_openai_clip(inner_state(source)), **text_tower()}}  # FaRL's released layout


def openai_clip_ddp(source) -> dict:
    return {
        "state_dict": {**to_openai_clip(inner_state(source), "module.visual."), "module.logit_scale": torch.ones(())}
    }


def open_clip_timm(source) -> dict:
    state = {f"visual.trunk.{k}": v for k, v in inner_state(source).items()}
    return {"state_dict": {**state, "visual.head.proj.weight": torch.randn(16, 32), **text_tower()}}


def dinov2(source) -> dict:
    return {**inner_state(source), "mask_token": torch.zeros(1, 32)}  # the facebookresearch hub file: bare


def timm_layout(source) -> dict:
    return inner_state(source)


LAYOUTS = [
    ("openai-clip", CLIP, openai_clip, 7 + 1),  # text tower + the projection
    ("openai-clip", CLIP, openai_clip_ddp, 1 + 1),
    ("open-clip-timm", CLIP, open_clip_timm, 7 + 1),
    ("dinov2", DINO, dinov2, 1),
    ("", CLIP, timm_layout, 0),
]


@pytest.mark.parametrize(("layout", "spec", "make", "dropped"), LAYOUTS, ids=lambda v: getattr(v, "__name__", None))
def test_published_layouts_load_fully_and_reproduce_the_features(tmp_path: Path, layout, spec, make, dropped) -> None:
    source, target = build(spec, 0), build(spec, 1)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        expected = source(x)
        assert (target(x) - expected).abs().max() > 1e-3  # different starting weights
    torch.save(make(source), tmp_path / "weights.pth")
    report = load_pretrained(target, tmp_path / "weights.pth")
    assert report.missing == [] and report.mismatched == []
    assert report.layout == layout and report.dropped == dropped
    if layout:
        assert report.unexpected == [] and f"{layout} layout" in report.summary()
    with torch.no_grad():
        assert (target(x) - expected).abs().max() <= 1e-6


def test_a_missing_backbone_key_is_an_error_and_a_wrong_architecture_is_named(tmp_path: Path) -> None:
    source = build(CLIP, 0)
    state = openai_clip(source)
    del state["state_dict"]["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(UserError, match=r"does not fill the backbone: .*missing: model\.blocks\.1\.mlp\.fc1\.weight"):
        load_pretrained(build(CLIP, 1), tmp_path / "cut.pth")
    torch.save(openai_clip(source), tmp_path / "clip.pth")
    with pytest.raises(UserError, match="loads into a timm Vision Transformer"):
        load_pretrained(create_backbone("convnext-atto"), tmp_path / "clip.pth")


def test_farl_is_registered_with_its_source_and_needs_a_weights_file() -> None:
    from agebench.config import FitConfig, from_dict
    from agebench.validate import check_fit_config

    spec = get_backbone_spec("farl-b16")
    assert "FacePerceiver/FaRL" in (spec.requires_pretrained_path or "")
    cfg = from_dict(FitConfig, {"model": {"name": "farl-b16"}})
    cfg.data.manifest = __file__  # any existing file: the check under test comes later
    with pytest.raises(UserError, match="model.pretrained_path=None: model 'farl-b16' needs its weights file"):
        check_fit_config(cfg)
    with pytest.raises(UserError, match="would load OpenAI's CLIP weights, not FaRL's"):
        create_backbone("farl-b16", img_size=IMG, pretrained=True)
    with torch.device("meta"):
        farl = create_backbone("farl-b16", img_size=224)
    assert farl.num_features == 768 and type(farl.model).__name__ == "VisionTransformer"
    assert farl.model.blocks[0].mlp.act.__class__.__name__ == "QuickGELU"


def test_weights_list_names_what_the_foundation_protocol_needs(capsys) -> None:
    from agebench.cli import main

    config = Path(__file__).resolve().parents[1] / "experiments/paper/foundation.yaml"
    assert main(["weights", "list", "--config", str(config)]) == 1  # nothing is present on this machine
    out = capsys.readouterr().out
    assert "farl-b16         model.pretrained_path" in out and "FacePerceiver/FaRL" in out
    assert "vit_base_patch16_clip_224.openai" in out and "2 missing" in out
