"""ConvNeXt-Transformer hybrid of Maroun, Bekhouche & Dornaika (CVIU 2025, arXiv:2511.00123).

A ConvNeXt trunk extracts local features; its last feature map (768 x 7 x 7 at 224 px) becomes a sequence
of 49 tokens that a ViT-style encoder mixes globally, and the class token is the pooled feature:

    image -> ConvNeXt stages -> LayerNorm (the trunk's own head norm, so every trunk weight is used)
          -> tokens [B, (H/32)(W/32), C] -> Linear to ``width`` (only if C != width)
          -> [class token; tokens] + learned position embedding
          -> nn.TransformerEncoder (pre-norm, GELU) x ``depth`` -> LayerNorm -> class token [B, width]

The paper gives the total (33.42M with its regression head) but not the encoder's settings. The default
here is ConvNeXt-Tiny + one encoder layer of width 768 with 8 heads and PyTorch's default
``dim_feedforward=2048``, the simplest reading that lands on that total:

    ConvNeXt-Tiny trunk (incl. its head LayerNorm)  27,820,128
    class token + position embedding (1 + 49 tokens)    39,168
    encoder layer (attention 2,362,368, MLP 3,148,544, 2 LN)  5,513,984
    final LayerNorm                                       1,536
    backbone total                                   33,374,816
    + default head 768 -> 256 -> 1                      197,121
    total                                            33,571,937  (+0.45% of the paper's 33.42M)

``hybrid-atto`` puts a 2-layer, 160-wide encoder on ConvNeXt-Atto (320 channels, so the projection is
exercised); it is for CPU smoke runs and tests. ``hybrid-atto-trunk`` is the same module with ``depth=0``: the
trunk's tokens, normalised and averaged by the same code, with no attention between them, so a paired test of
the two measures what the encoder adds.

Which map becomes tokens: ``trunk_stages`` keeps the first 1-4 ConvNeXt stages (stride 4, 8, 16, 32). The paper
tokenises the last stage at 224 px, a 7 x 7 grid; at the CPU bench's 64 px that stage is 2 x 2 (4 tokens),
too few for attention to mean anything, so the CPU bench keeps 3 stages: stride 16, a 4 x 4 grid of 16 tokens,
the closest grid to the paper's that 64 px allows. Each token then covers 16 x 16 px of a 64 px face, a quarter
of the face's width, as a paper token covers 32 of 224 px (a seventh). A cut trunk gets a fresh LayerNorm for
the width it ends at.

Options for training from scratch (the CPU bench uses both on hybrid-atto; the paper's hybrid keeps the
defaults): ``pool="avg"`` averages the encoded tokens instead of reading a class token, and
``zero_init_residual=True`` zeroes each encoder layer's output projections, so that every layer starts as the
identity and the model starts as its trunk. From scratch on the synthetic set (7 epochs, lr 1.5e-3) this took
hybrid-atto's test MAE from 7.87 to 6.82 years. ``trunk_kwargs`` go to ``timm.create_model`` for the trunk.

The position embedding is sized for ``img_size`` (``(img_size // stride) ** 2`` tokens, stride 32 for a whole
trunk); fed another size,
the model resamples it bicubically (as timm ViTs do), so evaluation at a different size still runs.
For Grad-CAM, the last convolutional map is ``trunk.stages[-1]``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from timm.layers import LayerNorm2d, resample_abs_pos_embed
from torch import nn

from agebench.models.registry import BlockLayout, Regime, register_backbone


def _grid(img_size: int | tuple[int, int], stride: int) -> tuple[int, int]:
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if h < stride or w < stride:
        raise ValueError(f"hybrid backbone needs images of at least {stride} px, got {h}x{w}")
    return h // stride, w // stride


def _keep_last_stage_resolution(trunk: nn.Module) -> None:
    """Make the last stage's 2x2 stride-2 downsampling conv stride 1 ('same' padding): the trunk then ends at
    half the stride (a ConvNeXt: 16) with every weight of the same shape, so checkpoints still load.

    Not timm's ``output_stride=16``: that dilates the last stage's 7x7 depthwise kernels by 2, and on a 4 x 4 map
    most of a dilated kernel's taps land in the padding (on the synthetic set, 4 epochs at 64 px: test MAE 7.59
    dilated vs 6.34 for the plain stride-32 trunk).
    """
    last = trunk.stages[-1]
    down = getattr(last, "downsample", None)
    conv = next((m for m in down.modules() if isinstance(m, nn.Conv2d)), None) if down is not None else None
    if conv is None or conv.stride == (1, 1):
        raise ValueError("hybrid last_downsample=False needs a trunk whose last stage starts with a strided conv")
    # PyTorch pads an even kernel's 'same' asymmetrically through a padded copy, and says so on every call.
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")
    kept = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=1, padding="same")
    kept.load_state_dict(conv.state_dict())
    for name, child in down.named_children():
        if child is conv:
            setattr(down, name, kept)
    trunk.feature_info[-1] = {**trunk.feature_info[-1], "reduction": trunk.feature_info[-1]["reduction"] // 2}


class ConvNeXtTransformer(nn.Module):
    """ConvNeXt trunk + transformer encoder over its last feature map; ``forward`` returns the pooled token
    (the class token, or the mean of the tokens with ``pool="avg"``)."""

    def __init__(
        self,
        trunk: str = "convnext_tiny",
        img_size: int | tuple[int, int] = 224,
        width: int = 768,
        depth: int = 1,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        pretrained: bool = False,
        pool: str = "cls",
        trunk_kwargs: dict[str, Any] | None = None,
        zero_init_residual: bool = False,
        trunk_stages: int | None = None,
        last_downsample: bool = True,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "avg"):
            raise ValueError(f"hybrid pool must be 'cls' or 'avg', got {pool!r}")
        if pool == "cls" and depth == 0:
            raise ValueError("hybrid depth 0 (the trunk alone) needs pool='avg': a class token needs an encoder")
        from agebench.models.weights import create_timm_model

        self.trunk = create_timm_model(
            trunk, pretrained=pretrained, num_classes=0, drop_path_rate=drop_path_rate, **(trunk_kwargs or {})
        )
        all_stages = len(self.trunk.stages)
        self.trunk_stages = all_stages if trunk_stages is None else int(trunk_stages)
        if not 1 <= self.trunk_stages <= all_stages:
            raise ValueError(f"hybrid trunk_stages must be in 1..{all_stages}, got {trunk_stages!r}")
        if self.trunk_stages < all_stages:  # tokenise an earlier, finer map: drop the later stages, norm anew
            self.trunk.stages = self.trunk.stages[: self.trunk_stages]
            width_at_cut = int(self.trunk.feature_info[self.trunk_stages - 1]["num_chs"])
            self.trunk.feature_info = self.trunk.feature_info[: self.trunk_stages]
            self.trunk.head.norm = LayerNorm2d(width_at_cut, eps=1e-6)
            self.trunk.num_features = self.trunk.head_hidden_size = width_at_cut
        if not last_downsample:
            _keep_last_stage_resolution(self.trunk)
        # The trunk's own stride (timm's feature_info): 32 for a whole ConvNeXt, 16 with trunk_kwargs
        # output_stride=16 (the last stage dilated instead of downsampled) or with trunk_stages=3.
        self.stride = int(self.trunk.feature_info[-1]["reduction"])
        trunk_dim = int(self.trunk.num_features)
        self.proj: nn.Module = nn.Identity() if trunk_dim == width else nn.Linear(trunk_dim, width)
        self.grid_size = _grid(img_size, self.stride)
        num_tokens = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + num_tokens, width))
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=num_heads,
            dim_feedforward=mlp_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks, and warn with norm_first. Depth 0 is the trunk alone (the
        # encoder's ablation): the same tokens, norm and pooling, no attention.
        self.encoder: nn.Module = (
            nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False) if depth else nn.Identity()
        )
        self.depth = depth
        self.norm = nn.LayerNorm(width)
        self.num_features = width
        # timm ViT initialisation for the new embeddings.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if zero_init_residual:  # each encoder layer starts as the identity: training begins from the trunk alone
            for enc_layer in getattr(self.encoder, "layers", []):
                for out in (enc_layer.self_attn.out_proj, enc_layer.linear2):
                    nn.init.zeros_(out.weight)
                    nn.init.zeros_(out.bias)

    def regime(self, img_size: int) -> Regime:
        """The encoder attends over the trunk's token grid (depth 0: no attention, the grid is the last map)."""
        grid = _grid(img_size, self.stride)
        if not self.depth:
            return Regime(mechanism="convolution", grid=grid)
        return Regime(mechanism="attention", grid=grid, tokens=grid[0] * grid[1])

    def blocks(self) -> BlockLayout:
        """The trunk's stages, then the encoder's layers; the trunk's stem is the embedding. The first encoder
        layer's block also holds what feeds it (the trunk's token norm, the projection, class token and position
        embedding); the final norm follows the blocks. With depth 0 the token norm follows the blocks too."""
        stages = tuple((f"trunk.stages.{i}",) for i in range(len(self.trunk.stages)))
        layers = tuple((f"encoder.layers.{i}",) for i in range(self.depth))
        if layers:
            feed = ("trunk.head.norm", "proj", "cls_token", "pos_embed")
            layers = ((*feed, *layers[0]), *layers[1:])
        return BlockLayout(embed=("trunk.stem",), blocks=stages + layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised token map ``[B, C, H/stride, W/stride]`` (the last trunk stage kept)."""
        return self.trunk.head.norm(self.trunk.forward_features(x))

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed, new_size=list(grid), old_size=list(self.grid_size), num_prefix_tokens=self.num_prefix_tokens
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded tokens ``[B, num_prefix_tokens + N, width]``, class token (if any) first, as in timm ViTs."""
        fmap = self.feature_map(x)
        grid = (fmap.shape[-2], fmap.shape[-1])
        tokens = self.proj(fmap.flatten(2).transpose(1, 2))
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.norm(self.encoder(tokens + self._pos_embed(grid)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(x)
        return tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)


_ATTO = {"trunk": "convnext_atto", "width": 160, "depth": 2, "num_heads": 4, "mlp_dim": 320}


@register_backbone(
    "hybrid-atto-trunk",
    default_kwargs={**_ATTO, "depth": 0, "pool": "avg"},
    description="hybrid-atto without its encoder (depth 0): the ablation that measures the encoder",
    small=True,
)
@register_backbone(
    "hybrid-atto",
    default_kwargs=_ATTO,
    description="ConvNeXt-Atto + 2-layer 160-wide encoder, for CPU smoke runs",
    small=True,
)
@register_backbone(
    "hybrid",
    default_kwargs={"trunk": "convnext_tiny", "width": 768, "depth": 1, "num_heads": 8, "mlp_dim": 2048},
    description="ConvNeXt-Tiny + 1-layer transformer encoder (Maroun et al. 2025)",
)
def hybrid(img_size: int | tuple[int, int] = 224, **kwargs: Any) -> ConvNeXtTransformer:
    """The hybrid at ``img_size``; kwargs are :class:`ConvNeXtTransformer` arguments."""
    return ConvNeXtTransformer(img_size=img_size, **kwargs)
