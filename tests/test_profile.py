"""The profiler's FLOP count and timings on tiny models (CPU)."""

from __future__ import annotations

import torch
from torch import nn

from agebench.bench.profile import gflops, profile_model
from agebench.models import build_model


def test_gflops_counts_a_multiply_add_as_two() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10, bias=False)).eval()
    assert gflops(model, 8, torch.device("cpu")) == 2 * 3 * 8 * 8 * 10 / 1e9


def test_gflops_count_attention_on_cpu_too() -> None:
    class Attention(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.reshape(1, 3, 8, 8)  # 3 heads, 8 tokens of 8 dims
            return torch.nn.functional.scaled_dot_product_attention(t, t, t)

    assert gflops(Attention(), 8, torch.device("cpu")) == 2 * (2 * 3 * 8 * 8 * 8) / 1e9  # q k^T, then (.) v


def test_gflops_include_the_hybrid_encoder() -> None:
    """The encoder's fused eval fast path must not hide its FLOPs (it once counted as zero)."""
    backbone, _ = build_model("hybrid-atto", img_size=64)
    backbone.eval()
    trunk_flops = gflops(nn.Sequential(backbone.trunk), 64, torch.device("cpu"))
    tokens = 1 + (64 // 32) ** 2
    encoder_linear = sum(m.weight.numel() for m in backbone.encoder.modules() if isinstance(m, nn.Linear))
    encoder_linear += sum(
        layer.self_attn.in_proj_weight.numel() for layer in backbone.encoder.layers
    )  # MHA keeps q/k/v as a bare parameter
    total = gflops(backbone, 64, torch.device("cpu"))
    assert total * 1e9 >= trunk_flops * 1e9 + 2 * tokens * encoder_linear


def test_profile_model_reports_costs_and_settings() -> None:
    backbone, head = build_model("convnext-atto", img_size=64)
    result = profile_model(nn.Sequential(backbone, head), img_size=64, batch_size=2, warmup=1, iters=2)
    assert (
        result["params"]
        == result["trainable_params"]
        == sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in head.parameters())
    )
    assert result["gflops"] > 0 and result["latency_ms"] > 0 and result["throughput"] > 0
    assert result["profile"] | {"device": None} == {
        "device": None,
        "batch_size": 2,
        "img_size": 64,
        "precision": "32-true",
        "channels_last": False,
        "warmup": 1,
        "iters": 2,
        "compile": None,
        "compile_seconds": None,
    }
