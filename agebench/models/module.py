"""The LightningModule shared by every backbone: backbone + head, loss, metrics, AdamW + warmup-cosine.

Thin on purpose (lightning-hydra-template style): the network arrives as ``backbone`` and ``head``
modules, so every model in the benchmark is trained by exactly the same code.

Rebuilding from a checkpoint: hyper-parameters hold ``model_config`` (the :func:`build_model` arguments)
but not the modules, so ``AgeRegressor.load_from_checkpoint(path)`` rebuilds the network from
``model_config`` (without downloading or reading pretrained weights: the checkpoint overrides them) and
then loads the trained weights. A Grad-CAM tool can do the same from ``ckpt["hyper_parameters"]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from agebench.errors import UserError
from agebench.metrics import DEFAULT_KS, CumulativeScore
from agebench.models.head import RegressionHead
from agebench.models.losses import build_loss
from agebench.models.pretrained import load_pretrained
from agebench.models.registry import create_backbone
from agebench.models.weights import weights_source

# Parameters matched by these name fragments are excluded from weight decay (as are all 0-/1-D tensors:
# norms and biases): decaying learned embeddings towards 0 only hurts.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "position_embedding", "class_token")


def build_model(
    name: str,
    img_size: int,
    head_hidden: int = 256,
    head_dropout: float = 0.0,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    weights_dir: str | Path | None = None,
    **backbone_kwargs: Any,
) -> tuple[nn.Module, RegressionHead]:
    """Backbone ``name`` built for ``img_size`` plus a fresh :class:`RegressionHead` on its features.

    ``pretrained=True`` loads timm's weights from ``weights_dir``, the Hugging Face cache or the hub, in
    that order (see :mod:`agebench.models.weights`); ``pretrained_path`` then loads a local file into the
    backbone (a whole AgeRegressor checkpoint works too: its ``backbone.`` prefix is reconciled).
    """
    if pretrained:
        backbone_kwargs["pretrained"] = True  # only when asked, so third-party factories need not accept it
    with weights_source(name, weights_dir):
        backbone = create_backbone(name, img_size=img_size, **backbone_kwargs)
    if pretrained_path is not None:
        load_pretrained(backbone, pretrained_path)
    head = RegressionHead(backbone.num_features, hidden=head_hidden, dropout=head_dropout)
    return backbone, head


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup ``(step+1)/warmup_steps``, then cosine from 1 down to ``min_ratio``.

    The warmup starts at ``1/warmup_steps`` rather than 0 so that no optimiser step is wasted; the cosine
    reaches ``min_ratio`` at ``total_steps`` and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _no_weight_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or any(fragment in name for fragment in NO_DECAY_NAMES)


class AgeRegressor(pl.LightningModule):
    """Age regression with any registered backbone.

    Args:
        backbone, head: the network; if omitted, built from ``model_config`` (checkpoint reload).
        model_config: :func:`build_model` kwargs, stored so the network can be rebuilt.
        loss, loss_kwargs: see :func:`agebench.models.losses.build_loss`; computed in years.
        lr, weight_decay, betas, eps: AdamW; no decay on norms, biases, position embeddings, class tokens.
        warmup_steps: linear warmup length; if None, ``warmup_fraction`` of the total steps.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        total_steps: schedule length; if None, ``trainer.estimated_stepping_batches``.
        age_mean, age_std: if given, the head predicts the standardised age ``(age - mean) / std``; outputs
            are always in years. This centres the untrained head on the training ages instead of 0.
        cs_ks: the k of the CS@k metrics.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        head: nn.Module | None = None,
        *,
        model_config: Mapping[str, Any] | None = None,
        loss: str = "l1",
        loss_kwargs: Mapping[str, Any] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int | None = None,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        total_steps: int | None = None,
        age_mean: float | None = None,
        age_std: float | None = None,
        cs_ks: Iterable[int] = DEFAULT_KS,
    ) -> None:
        super().__init__()
        if age_std is not None and not age_std > 0:
            raise UserError(f"age_std must be > 0, got {age_std}")
        cs_ks = tuple(cs_ks)
        if model_config is not None:
            # Plain values only: checkpoints are read back with torch.load(weights_only=True).
            model_config = {k: str(v) if isinstance(v, Path) else v for k, v in model_config.items()}
        self.save_hyperparameters(ignore=["backbone", "head"])
        if backbone is None or head is None:
            if model_config is None:
                raise ValueError("AgeRegressor needs either backbone and head, or model_config to build them")
            # Rebuilding (e.g. from a checkpoint): trained weights come from the checkpoint, not pretraining.
            rebuild = {**model_config, "pretrained": False, "pretrained_path": None, "weights_dir": None}
            backbone, head = build_model(**rebuild)
        self.backbone = backbone
        self.head = head
        self.loss_fn = build_loss(loss, **dict(loss_kwargs or {}))
        self.register_buffer("age_mean", torch.tensor(float(age_mean or 0.0)))
        self.register_buffer("age_std", torch.tensor(float(age_std if age_std is not None else 1.0)))

        self.train_mae = MeanAbsoluteError()
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_cs = CumulativeScore(cs_ks)
        self.test_mae = MeanAbsoluteError()
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_cs = CumulativeScore(cs_ks)

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any], **kwargs: Any) -> AgeRegressor:
        """Build the network with :func:`build_model` (pretrained weights included) and wrap it."""
        backbone, head = build_model(**dict(model_config))
        return cls(backbone, head, model_config=model_config, **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> predicted ages in years ``[B]`` (float32, also under autocast)."""
        out = self.head(self.backbone(images)).squeeze(-1).float()
        return out * self.age_std + self.age_mean

    def _shared_step(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self(batch["image"])
        target = batch["age"].float()
        return pred, target, self.loss_fn(pred, target)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        pred, target, loss = self._shared_step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}): lower the learning rate, check the data "
                f"for NaN pixels or ages, or train in fp32/bf16 rather than fp16"
            )
        self.train_mae.update(pred.detach(), target)
        batch_size = target.shape[0]
        # sync_dist: the epoch value averages all ranks (a scalar all-reduce per step, negligible next to DDP's).
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log("train/mae", self.train_mae, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        pred, target, loss = self._shared_step(batch)
        self.val_mae.update(pred, target)
        self.val_rmse.update(pred, target)
        self.val_cs.update(pred, target)
        batch_size = target.shape[0]
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=batch_size)
        self.log("val/mae", self.val_mae, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self.log("val/rmse", self.val_rmse, on_epoch=True, batch_size=batch_size)

    def on_validation_epoch_end(self) -> None:
        # CS is a vector, which self.log cannot take as a Metric object. compute() already sums the counts
        # of all ranks, so every rank logs the same value (sync_dist then only silences Lightning's warning).
        if self.val_cs.update_called:
            shares = self.val_cs.compute()
            if 5 in self.val_cs.ks:
                self.log("val/cs5", shares[self.val_cs.ks.index(5)], sync_dist=True)
            self.val_cs.reset()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        pred, target, loss = self._shared_step(batch)
        self.test_mae.update(pred, target)
        self.test_rmse.update(pred, target)
        self.test_cs.update(pred, target)
        batch_size = target.shape[0]
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=batch_size)
        self.log("test/mae", self.test_mae, on_epoch=True, batch_size=batch_size)
        self.log("test/rmse", self.test_rmse, on_epoch=True, batch_size=batch_size)

    def on_test_epoch_end(self) -> None:
        if self.test_cs.update_called:
            for k, share in zip(self.test_cs.ks, self.test_cs.compute(), strict=True):
                self.log(f"test/cs{k}", share, sync_dist=True)
            self.test_cs.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"index", "pred", "age", "path"}`` per batch; ``age``/``path`` are None when the batch lacks them."""
        return {
            "index": batch["index"],
            "pred": self(batch["image"]).detach(),
            "age": batch.get("age"),
            "path": batch.get("path"),
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: decayed weights, and undecayed norms / biases / embeddings / tokens."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if _no_weight_decay(name, param) else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def _total_steps(self) -> int:
        if self.hparams.total_steps is not None:
            return int(self.hparams.total_steps)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError("the LR schedule needs a finite length: set trainer max_steps or max_epochs")
        return int(total)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        total = self._total_steps()
        warmup = hp.warmup_steps if hp.warmup_steps is not None else int(round(hp.warmup_fraction * total))
        schedule = partial(warmup_cosine, warmup_steps=warmup, total_steps=total, min_ratio=hp.min_lr_ratio)
        scheduler = LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
