"""Does the data loader starve the GPU? Training images/s with and without the real input pipeline.

For each model it times the same training step (forward, loss, backward, AdamW step; Lightning's precision
handled by ``torch.autocast``) two ways:

    (a) model only: one random batch already on the device, reused every step (the ceiling);
    (b) loader:     batches from ``AgeDataModule.train_dataloader()`` (uint8 crop cache, the real train
                    augmentations, ``--workers`` processes), copied to the device inside the timed loop;

and prints (a), (b) and (b)/(a). Timing starts after ``--warmup`` steps (workers started, kernels selected)
and ends after a device synchronisation. It also times the hybrid's batch-1 latency in fp32, then with
``torch.compile(mode="reduce-overhead")`` (CUDA graphs) and in bf16 with channels_last.

    python scripts/gpu_throughput.py                         # 224 px, bf16-mixed, convnext vit hybrid (GPU)
    python scripts/gpu_throughput.py --tiny                  # CPU smoke run: small models, 32 px, fp32
    python scripts/gpu_throughput.py --manifest M.csv        # an existing manifest with a crop cache >= img size

Without ``--manifest`` it first draws a synthetic set with a crop cache at the image size (``agebench synth``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agebench.bench.profile import profile_model  # noqa: E402
from agebench.data.datamodule import AgeDataModule  # noqa: E402
from agebench.evaluate import autocast_for  # noqa: E402
from agebench.models import build_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device, precision: str, channels_last: bool):
    """One training step on (images, ages) as fit does it: autocast forward, L1 loss in fp32, AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(images: torch.Tensor, ages: torch.Tensor) -> None:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_for(precision, device):
            pred = model(images).float().squeeze(-1)
        loss = torch.nn.functional.l1_loss(pred, ages)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def model_only(step, batch: int, img_size: int, device: torch.device, warmup: int, steps: int) -> float:
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    ages = torch.rand(batch, device=device) * 80
    for _ in range(warmup):
        step(images, ages)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(images, ages)
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def through_loader(step, dm: AgeDataModule, device: torch.device, warmup: int, steps: int) -> float:
    images_seen, start = 0, None
    done = 0
    while done < warmup + steps:
        for batch in dm.train_dataloader():
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            images = batch["image"].to(device, non_blocking=True)
            ages = batch["age"].to(device, non_blocking=True)
            step(images, ages)
            if done >= warmup:
                images_seen += images.shape[0]
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return images_seen / (time.perf_counter() - start)


def synthetic_manifest(folder: Path, n: int, img_size: int, workers: int) -> Path:
    from agebench.data.synthetic import generate

    size = max(32, img_size)
    return generate(folder, n=n, seed=0, size=size, workers=workers, progress=False, cache_size=img_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: convnext vit hybrid (--tiny: the -atto/-tiny)")
    p.add_argument("--img-size", type=int, default=None, help="default 224 (--tiny: 32)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (--tiny: 8)")
    p.add_argument("--precision", default=None, help="default bf16-mixed on CUDA, 32-true on CPU")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: CPU cores - 1, max 16)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10; --tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50; --tiny 2)")
    p.add_argument("--channels-last", action="store_true", help="channels_last inputs and weights")
    p.add_argument("--manifest", default=None, help="existing manifest with a crop cache (default: draw one)")
    p.add_argument("--n-images", type=int, default=None, help="synthetic images to draw (default 8192; --tiny 48)")
    p.add_argument("--no-latency", action="store_true", help="skip the hybrid batch-1 latency figures")
    p.add_argument("--tiny", action="store_true", help="CPU-sized smoke run of the whole script")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    models = args.models or (["convnext-atto", "vit-tiny", "hybrid-atto"] if tiny else ["convnext", "vit", "hybrid"])
    img_size = args.img_size or (32 if tiny else 224)
    batch = args.batch_size or (8 if tiny else 128)
    precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    workers = args.workers if args.workers is not None else min(16, max(0, (os.cpu_count() or 1) - 1))
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 10)
    steps = args.steps if args.steps is not None else (2 if tiny else 50)
    n_images = args.n_images or (48 if tiny else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; {img_size} px, batch {batch}, {precision}, {workers} loader workers, {steps} timed steps")

    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            manifest = Path(args.manifest)
        else:
            start = time.perf_counter()
            manifest = synthetic_manifest(Path(tmp) / "synth", n_images, img_size, max(1, workers))
            print(f"drew {n_images} synthetic faces with a {img_size} px cache in {time.perf_counter() - start:.0f} s")
        dm = AgeDataModule(manifest, img_size=img_size, batch_size=batch, num_workers=workers, seed=0)
        dm.setup()
        rows = []
        for model_name in models:
            backbone, head = build_model(model_name, img_size=img_size)
            model = torch.nn.Sequential(backbone, head).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            step = make_step(model, device, precision, args.channels_last)
            a = model_only(step, batch, img_size, device, warmup, steps)
            b = through_loader(step, dm, device, warmup, steps)
            rows.append({"model": model_name, "model_only": a, "loader": b, "ratio": b / a})
            print(f"{model_name:14s} (a) model only {a:9.1f} img/s   (b) loader {b:9.1f} img/s   (b)/(a) {b / a:.2f}")
            del model, step
            if device.type == "cuda":
                torch.cuda.empty_cache()

        latency = {}
        if not args.no_latency:
            hybrid = "hybrid-atto" if tiny else "hybrid"
            backbone, head = build_model(hybrid, img_size=img_size)
            net = torch.nn.Sequential(backbone, head)
            settings = {
                "fp32": {"precision": "32-true"},
                "fp32 + compile(reduce-overhead)": {"precision": "32-true", "compile_mode": "reduce-overhead"},
                "bf16-true + channels_last": {"precision": "bf16-true", "channels_last": True},
            }
            for label, kw in settings.items():
                fresh = torch.nn.Sequential(*build_model(hybrid, img_size=img_size))
                fresh.load_state_dict(net.state_dict())
                iters = 5 if tiny else 200
                result = profile_model(
                    fresh, img_size=img_size, batch_size=1, device=device, warmup=2 if tiny else 50, iters=iters, **kw
                )
                latency[label] = result["latency_ms"]
                print(f"{hybrid} batch-1 latency, {label:32s} {result['latency_ms']:8.2f} ms")
    if args.json:
        out = {
            "device": name,
            "img_size": img_size,
            "batch_size": batch,
            "precision": precision,
            "workers": workers,
            "throughput": rows,
            "hybrid_latency_ms": latency,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
