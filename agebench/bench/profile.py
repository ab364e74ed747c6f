"""Parameter count, GFLOPs, latency and throughput, timed the way timm's benchmark.py does.

What is timed: ``model(x)`` in eval mode under ``torch.no_grad()``, after ``warmup`` untimed calls, each call
bracketed by device synchronisation; latency is the median over ``iters`` calls at batch 1, throughput is
batch / median seconds at the benchmark batch. The input is random (timing does not depend on content).
GFLOPs come from torch.utils.flop_counter (a multiply-add counts as 2 FLOPs), at batch 1.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from agebench.evaluate import autocast_for


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _attention_flops(query_shape, key_shape, value_shape, *args: Any, **kwargs: Any) -> int:
    """FLOPs of softmax(q k^T) v from the operand shapes (the formula torch uses for its GPU kernels)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def gflops(model: nn.Module, img_size: int, device: torch.device) -> float | None:
    """Forward FLOPs at batch 1 (None when the counter cannot run the model).

    Counted with autograd on: under ``no_grad`` in eval mode, ``nn.TransformerEncoderLayer`` takes PyTorch's
    fused fast path, whose single op the counter does not know, so the hybrid's encoder would count as zero.
    """
    from torch.utils.flop_counter import FlopCounterMode

    # torch counts the GPU attention kernels but not the CPU one: give it the same formula.
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {cpu_attention: _attention_flops} if cpu_attention is not None else {}
    x = torch.randn(1, 3, img_size, img_size, device=device)
    try:
        with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(x)
    except Exception:  # noqa: BLE001 - a model the counter cannot trace still gets timed
        return None
    return counter.get_total_flops() / 1e9


def time_forward(
    model: nn.Module,
    batch_size: int,
    img_size: int,
    device: torch.device,
    *,
    precision: str = "32-true",
    channels_last: bool = False,
    warmup: int = 10,
    iters: int = 30,
) -> float:
    """Median seconds of one synchronised forward pass at ``batch_size``."""
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), autocast_for(precision, device):
        for i in range(warmup + iters):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def profile_model(
    model: nn.Module,
    *,
    img_size: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "32-true",
    channels_last: bool = False,
    warmup: int = 10,
    iters: int = 30,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Everything the leaderboard shows about a model's cost, with the settings that produced it.

    ``compile_mode`` (e.g. ``"reduce-overhead"``: CUDA graphs on GPUs, which removes the kernel-launch cost
    that dominates batch-1 latency) times ``torch.compile(model, mode=...)`` instead; the first call, which
    compiles, is timed apart as ``compile_seconds`` and never enters the latency or throughput figures.
    """
    device = torch.device(device)
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if precision == "bf16-true":
        model = model.to(torch.bfloat16)
    params, trainable = count_parameters(model)
    flops = gflops(model, img_size, device)
    compile_seconds = None
    if compile_mode:
        model = torch.compile(model, mode=compile_mode)
        compile_seconds = time_forward(
            model, 1, img_size, device, precision=precision, channels_last=channels_last, warmup=0, iters=1
        )
    latency = time_forward(
        model, 1, img_size, device, precision=precision, channels_last=channels_last, warmup=warmup, iters=iters
    )
    batch_time = time_forward(
        model,
        batch_size,
        img_size,
        device,
        precision=precision,
        channels_last=channels_last,
        warmup=max(2, warmup // 2),
        iters=max(5, iters // 3),
    )
    return {
        "params": params,
        "trainable_params": trainable,
        "gflops": flops,
        "latency_ms": latency * 1000.0,
        "throughput": batch_size / batch_time,
        "profile": {
            "device": device_name(device),
            "batch_size": batch_size,
            "img_size": img_size,
            "precision": precision,
            "channels_last": channels_last,
            "warmup": warmup,
            "iters": iters,
            "compile": compile_mode,
            "compile_seconds": compile_seconds,
        },
    }
