"""The LightningModule shared by every backbone: backbone + head, loss, metrics, AdamW + warmup-cosine.

Thin on purpose (lightning-hydra-template style): the network arrives as ``backbone`` and ``head``
modules, so every model in the benchmark is trained by exactly the same code. The head owns its method
(``forward`` -> raw outputs, ``loss``, ``decode`` -> years; see :mod:`agebench.models.heads`): this module never
asks which head it holds.

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
from agebench.models.heads import DEFAULT_HEAD, create_head, head_context, resolve_head_kwargs
from agebench.models.pretrained import load_pretrained
from agebench.models.registry import BlockLayout, backbone_blocks, create_backbone
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
    head: Mapping[str, Any] | str | None = None,
    age_range: tuple[int, int] | list[int] | None = None,
    **backbone_kwargs: Any,
) -> tuple[nn.Module, nn.Module]:
    """Backbone ``name`` built for ``img_size`` plus a fresh head on its features.

    ``head`` is a head name or ``{"name": ..., **kwargs}`` (default: the regression head); ``head_hidden`` and
    ``head_dropout`` size the shared MLP trunk of every head; ``age_range`` is ``(min_age, max_age)`` for the
    integer-age heads. ``pretrained=True`` loads timm's weights from ``weights_dir``, the Hugging Face cache or
    the hub, in that order (see :mod:`agebench.models.weights`); ``pretrained_path`` then loads a local file
    into the backbone (a whole AgeRegressor checkpoint works too: its ``backbone.`` prefix is reconciled).
    """
    if pretrained:
        backbone_kwargs["pretrained"] = True  # only when asked, so third-party factories need not accept it
    head_name, head_kwargs = split_head_config(head)
    context = head_context(hidden=head_hidden, dropout=head_dropout)
    head_kwargs = resolve_head_kwargs(head_name, head_kwargs, context)  # before the (slower) backbone
    with weights_source(name, weights_dir):
        backbone = create_backbone(name, img_size=img_size, **backbone_kwargs)
    if pretrained_path is not None:
        load_pretrained(backbone, pretrained_path)
    return backbone, create_head(head_name, backbone.num_features, age_range, **head_kwargs)


def split_head_config(head: Mapping[str, Any] | str | None) -> tuple[str, dict[str, Any]]:
    """``"coral"`` or ``{"name": "coral", **kwargs}`` (None: the default head) -> (name, kwargs)."""
    if head is None:
        return DEFAULT_HEAD, {}
    if isinstance(head, str):
        return head, {}
    kwargs = dict(head)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"head config needs a 'name' (a registered head), got {dict(head)!r}")
    return name, kwargs


def _legacy_head(
    loss: str | None, loss_kwargs: Mapping[str, Any] | None, age_mean: float | None, age_std: float | None
) -> dict[str, Any]:
    """The regression head that AgeRegressor's pre-0.3 arguments (loss, loss_kwargs, age_mean, age_std) described."""
    head: dict[str, Any] = {"name": DEFAULT_HEAD}
    if loss is not None:
        head["loss"] = loss
    if loss_kwargs:
        head["loss_kwargs"] = dict(loss_kwargs)
    if age_mean is not None:
        head["age_mean"] = float(age_mean)
    if age_std is not None:
        head["age_std"] = float(age_std)
    return head


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


def _move_legacy_head_buffers(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints before 0.3 kept the regression head's ``age_mean``/``age_std`` on the module itself: a
    top-level key this module lacks but its head has moves to ``head.<key>``."""
    own = {name for name, _ in module.named_buffers(recurse=False)} | {
        n for n, _ in module.named_parameters(recurse=False)
    }
    head_keys = set(module.head.state_dict())
    for key in [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]:
        short = key[len(prefix) :]
        if short not in own and short in head_keys and f"{prefix}head.{short}" not in state_dict:
            state_dict[f"{prefix}head.{short}"] = state_dict.pop(key)


class AgeRegressor(pl.LightningModule):
    """Age estimation with any registered backbone and any registered head.

    Args:
        backbone, head: the network; if omitted, built from ``model_config`` (checkpoint reload). The head
            computes the loss and decodes ages (:mod:`agebench.models.heads`).
        model_config: :func:`build_model` kwargs, stored so the network can be rebuilt; its ``head`` entry holds
            the head's resolved settings and ``age_range`` the integer age range, so a reload decodes the same.
        lr, weight_decay, betas, eps: AdamW; no decay on norms, biases, position embeddings, class tokens.
        warmup_steps: linear warmup length; if None, ``warmup_fraction`` of the total steps.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        total_steps: schedule length; if None, ``trainer.estimated_stepping_batches``.
        cs_ks: the k of the CS@k metrics.
        freeze: "none" or "backbone" (a probe: the backbone gets no gradient, no optimizer state, and stays in
            eval mode, so its normalisation statistics and dropout stay as they were).
        train_last_blocks: train only the backbone's last K declared blocks (and what follows them) and the head.
        layer_decay: BEiT/MAE layer-wise decay F: block i of D at ``lr * F^(D - i)``, embeddings at
            ``lr * F^(D + 1)``, parameters after the blocks at ``lr``; None: off.
        backbone_lr_mult: multiplies every backbone learning rate (after ``layer_decay``).
        loss, loss_kwargs, age_mean, age_std: the pre-0.3 form of the regression head's settings (loss in years;
            the head predicts ``(age - mean) / std``). Used only when ``model_config`` has no ``head``, so old
            checkpoints (and callers) rebuild exactly what they trained.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        head: nn.Module | None = None,
        *,
        model_config: Mapping[str, Any] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int | None = None,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        total_steps: int | None = None,
        cs_ks: Iterable[int] = DEFAULT_KS,
        freeze: str = "none",
        train_last_blocks: int | None = None,
        layer_decay: float | None = None,
        backbone_lr_mult: float = 1.0,
        loss: str | None = None,
        loss_kwargs: Mapping[str, Any] | None = None,
        age_mean: float | None = None,
        age_std: float | None = None,
    ) -> None:
        super().__init__()
        cs_ks = tuple(cs_ks)
        if model_config is not None:
            # Plain values only: checkpoints are read back with torch.load(weights_only=True).
            model_config = {k: str(v) if isinstance(v, Path) else v for k, v in model_config.items()}
        self.save_hyperparameters(ignore=["backbone", "head"])
        if backbone is None or head is None:
            if model_config is None:
                raise ValueError("AgeRegressor needs either backbone and head, or model_config to build them")
            # Rebuilding (e.g. from a checkpoint): trained weights come from the checkpoint, not pretraining.
            config = self._with_head(model_config, loss, loss_kwargs, age_mean, age_std)
            backbone, head = build_model(
                **{**config, "pretrained": False, "pretrained_path": None, "weights_dir": None}
            )
        self.backbone = backbone
        self.head = head
        self._register_load_state_dict_pre_hook(_move_legacy_head_buffers, with_module=True)
        self._apply_freeze(freeze, train_last_blocks, layer_decay)

        self.train_mae = MeanAbsoluteError()
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_cs = CumulativeScore(cs_ks)
        self.test_mae = MeanAbsoluteError()
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_cs = CumulativeScore(cs_ks)

    def _layout(self, why: str) -> BlockLayout:
        layout = backbone_blocks(self.backbone)
        if layout is None:
            name = (self.hparams.model_config or {}).get("name", type(self.backbone).__name__)
            raise UserError(
                f"{why}: backbone {name!r} declares no blocks (the optional blocks() of the backbone contract), so "
                "it can train with model.freeze none or backbone only"
            )
        return layout

    def _apply_freeze(self, freeze: str, train_last_blocks: int | None, layer_decay: float | None) -> None:
        if freeze not in ("none", "backbone"):
            raise UserError(f"model.freeze={freeze!r}: expected none or backbone")
        if layer_decay is not None:
            self._layout("optim.layer_decay")
        if freeze == "backbone":
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        elif train_last_blocks is not None:
            layout = self._layout("model.train_last_blocks")
            depth = len(layout.blocks)
            if not 1 <= train_last_blocks <= depth:
                raise UserError(f"model.train_last_blocks={train_last_blocks}: expected 1..{depth} (the blocks)")
            first = depth - train_last_blocks + 1  # layer of the first trained block
            for name, param in self.backbone.named_parameters():
                param.requires_grad_(layout.layer_of(name) >= first)

    def train(self, mode: bool = True) -> AgeRegressor:
        """A frozen backbone stays in eval mode, so batch-norm statistics and dropout do not move."""
        super().train(mode)
        if self.hparams.get("freeze", "none") == "backbone":
            self.backbone.eval()
        return self

    def trainable_parameters(self) -> int:
        """Parameters the optimizer updates under the fine-tuning regime."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def lr_scales(self) -> dict[str, float]:
        """Per backbone parameter name, its learning-rate multiplier: ``backbone_lr_mult`` x the layer decay."""
        hp = self.hparams
        mult, decay = float(hp.get("backbone_lr_mult", 1.0)), hp.get("layer_decay")
        layout = self._layout("optim.layer_decay") if decay is not None else None
        scales = {}
        for name, _ in self.backbone.named_parameters():
            scale = mult
            if layout is not None:
                scale *= float(decay) ** (len(layout.blocks) + 1 - layout.layer_of(name))
            scales[f"backbone.{name}"] = scale
        return scales

    @staticmethod
    def _with_head(
        model_config: Mapping[str, Any],
        loss: str | None,
        loss_kwargs: Mapping[str, Any] | None,
        age_mean: float | None,
        age_std: float | None,
    ) -> dict[str, Any]:
        config = dict(model_config)
        if config.get("head") is None:
            config["head"] = _legacy_head(loss, loss_kwargs, age_mean, age_std)
        return config

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any], **kwargs: Any) -> AgeRegressor:
        """Build the network with :func:`build_model` (pretrained weights included) and wrap it."""
        legacy = [kwargs.get(k) for k in ("loss", "loss_kwargs", "age_mean", "age_std")]
        backbone, head = build_model(**cls._with_head(model_config, *legacy))
        return cls(backbone, head, model_config=model_config, **kwargs)

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """The head's raw outputs, in float32 also under autocast (losses and decodes want full precision)."""
        return self.head(self.backbone(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> predicted ages in years ``[B]`` (the head's decode, float32)."""
        return self.head.decode(self.raw(images)).float()

    def explained_age(self, images: torch.Tensor) -> torch.Tensor:
        """A differentiable age ``[B]`` for Grad-CAM: the head's ``explained_age``, else its decode."""
        raw = self.raw(images)
        return getattr(self.head, "explained_age", self.head.decode)(raw).float()

    def _shared_step(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.raw(batch["image"])
        target = batch["age"].float()
        return self.head.decode(raw).float(), target, self.head.loss(raw, target)

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
        """AdamW groups: decayed weights, and undecayed norms / biases / embeddings / tokens; the head's
        parameters in groups of their own at ``lr * head.lr_scale`` when the head declares a scale other than 1;
        backbone parameters grouped by their :meth:`lr_scales` when a regime scales them. Frozen parameters are
        in no group, so they get no optimizer state."""
        head_scale = float(getattr(self.head, "lr_scale", 1.0))
        backbone_scales = self.lr_scales()
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                scale = head_scale if name.startswith("head.") else backbone_scales.get(name, 1.0)
                groups.setdefault((scale, _no_weight_decay(name, param)), []).append(param)
        out = []
        # Unscaled groups first, in the order of earlier versions (decayed, then undecayed).
        for scale in sorted(set(s for s, _ in groups), key=lambda s: (s != 1.0, s)):
            for no_decay in (False, True):
                params = groups.get((scale, no_decay))
                if params:
                    group = {"params": params, "weight_decay": 0.0 if no_decay else self.hparams.weight_decay}
                    if scale != 1.0:
                        group["lr"] = self.hparams.lr * scale
                        group["lr_scale"] = scale
                    out.append(group)
        return out

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
