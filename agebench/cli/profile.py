"""Parameter count, GFLOPs, batch-1 latency and batch throughput of any registered model, without training.

Timed like timm's benchmark.py: warmup calls, then the median of synchronised forward passes on random input.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="backbone name (see `agebench models`)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="batch for the throughput figure")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (auto: cuda when available)")
    p.add_argument("--precision", default=None, help="32-true (CPU default), bf16-mixed, 16-mixed, bf16-true")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (GPU)")
    p.add_argument(
        "--compile",
        nargs="?",
        const="reduce-overhead",
        default=None,
        metavar="MODE",
        help="time torch.compile(model, mode=MODE) (default mode reduce-overhead: CUDA graphs on GPUs)",
    )
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from agebench.bench.profile import profile_model
    from agebench.errors import UserError
    from agebench.models import build_model
    from agebench.validate import PRECISIONS, check_device, check_input_size

    for flag, value, low in (
        ("--img-size", args.img_size, 1),
        ("--batch-size", args.batch_size, 1),
        ("--iters", args.iters, 1),
        ("--warmup", args.warmup, 0),
    ):
        if value < low:
            raise UserError(f"{flag} {value}: expected an integer >= {low}")
    if args.precision is not None and args.precision not in PRECISIONS:
        raise UserError(f"--precision {args.precision}: expected one of {', '.join(PRECISIONS)}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, f"--device {args.device}")
    precision = args.precision or ("bf16-mixed" if device.startswith("cuda") else "32-true")
    backbone, head = build_model(args.model, img_size=args.img_size)
    check_input_size(args.model, args.img_size, backbone=backbone)
    result = profile_model(
        nn.Sequential(backbone, head),
        img_size=args.img_size,
        batch_size=args.batch_size,
        device=device,
        precision=precision,
        channels_last=args.channels_last,
        warmup=args.warmup,
        iters=args.iters,
        compile_mode=args.compile,
    )
    result = {"model": args.model, **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    p = result["profile"]
    gflops = "n/a" if result["gflops"] is None else f"{result['gflops']:.2f}"
    print(
        f"{args.model} @ {p['img_size']} px on {p['device']}, {p['precision']}"
        f"{', channels_last' if p['channels_last'] else ''}"
    )
    if args.compile:
        print(f"  compile     torch.compile mode {args.compile}, first call {p['compile_seconds']:.1f} s (not timed)")
    print(f"  params      {result['params'] / 1e6:.2f} M ({result['trainable_params'] / 1e6:.2f} M trainable)")
    print(f"  GFLOPs      {gflops} (batch 1, multiply-add = 2 FLOPs)")
    print(f"  latency     {result['latency_ms']:.2f} ms (batch 1, median of {p['iters']} after {p['warmup']} warmup)")
    print(f"  throughput  {result['throughput']:.1f} img/s (batch {p['batch_size']})")
    return 0
