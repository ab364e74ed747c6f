"""What Lightning's training loop costs: the same model, the same batches, a bare PyTorch loop vs Trainer.fit.

Both sides train a fresh ``AgeRegressor`` (same seed, same weights) on the same pre-built batches (random
images, already in memory, so no data loading is timed) for ``--steps`` optimiser steps after ``--warmup``:

* bare: ``raw = module.raw(x); loss = module.head.loss(raw, y); zero_grad; backward; step`` with the module's
  own AdamW parameter groups;
* Lightning: ``Trainer(max_steps=...)`` over the batches, with agebench's training_step (metrics, logging),
  no validation, no checkpoints, no progress bar; timed from the first timed batch's start to the last
  batch's end by a callback, so Trainer setup and teardown are not counted.

It prints images/s of each and bare/Lightning throughput ratio (1.00 = no overhead).

    python scripts/lightning_overhead.py                              # convnext-atto, 64 px, batch 64, CPU
    python scripts/lightning_overhead.py --model hybrid-atto --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agebench.models import AgeRegressor  # noqa: E402


def fresh_module(model: str, img_size: int, seed: int, kwargs: dict | None = None) -> AgeRegressor:
    torch.manual_seed(seed)
    config = {"name": model, "img_size": img_size, **(kwargs or {})}
    return AgeRegressor.from_config(config, loss="mse", total_steps=1000)


def batches(n: int, batch: int, img_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(batch, 3, img_size, img_size, generator=g), "age": torch.rand(batch, generator=g) * 80}
        for _ in range(n)
    ]


def bare_loop(module: AgeRegressor, data: list[dict[str, torch.Tensor]], warmup: int) -> float:
    optimizer = torch.optim.AdamW(module.parameter_groups(), lr=1e-4)
    module.train()
    start, seen = 0.0, 0
    for i, b in enumerate(data):
        if i == warmup:
            start = time.perf_counter()
        loss = module.head.loss(module.raw(b["image"]), b["age"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            seen += b["image"].shape[0]
    return seen / (time.perf_counter() - start)


class StepClock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.seen = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.end = time.perf_counter()
            self.seen += batch["image"].shape[0]


def lightning_loop(module: AgeRegressor, data: list[dict[str, torch.Tensor]], warmup: int) -> float:
    clock = StepClock(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(data),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return clock.seen / (clock.end - clock.start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnext-atto")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--kwargs", type=json.loads, default={}, help="backbone kwargs as JSON, e.g. '{\"depth\": 4}'")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="alternating bare/Lightning runs; medians reported")
    args = p.parse_args()

    data = batches(args.warmup + args.steps, args.batch_size, args.img_size, seed=0)
    bare, light = [], []
    for r in range(args.repeats):  # alternate, so drift in machine speed hits both sides alike
        bare.append(bare_loop(fresh_module(args.model, args.img_size, r, args.kwargs), data, args.warmup))
        light.append(lightning_loop(fresh_module(args.model, args.img_size, r, args.kwargs), data, args.warmup))
    b, lt = statistics.median(bare), statistics.median(light)
    print(f"{args.model} @ {args.img_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"  bare PyTorch loop  {b:8.1f} img/s   (runs: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"  Lightning fit      {lt:8.1f} img/s   (runs: {', '.join(f'{x:.1f}' for x in light)})")
    print(f"  Lightning / bare   {lt / b:8.3f}")


if __name__ == "__main__":
    main()
