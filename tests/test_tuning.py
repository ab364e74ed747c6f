"""Fine-tuning regimes (issue 24): frozen backbones, partial fine-tuning of the last blocks, layer-wise lr decay,
the block declaration they rest on, and their hash neutrality at the defaults."""

from __future__ import annotations

import re

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from agebench.config import FitConfig, config_hash, from_dict
from agebench.errors import UserError
from agebench.models import AgeRegressor, create_backbone, create_head
from agebench.models.registry import backbone_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IMG = 32


class Faces(Dataset):
    """Random images with ages: enough to move every trained parameter."""

    def __init__(self, n: int = 16) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, IMG, IMG, generator=gen)
        self.ages = torch.rand(n, generator=gen) * 60 + 10

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "age": self.ages[i]}


class Snapshots(pl.Callback):
    """The module's state dict at the end of every training epoch (what a per-epoch checkpoint holds)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def regressor(name: str, backbone: nn.Module | None = None, **regime) -> AgeRegressor:
    backbone = backbone if backbone is not None else create_backbone(name, img_size=IMG)
    head = create_head("regression", backbone.num_features, None, hidden=16)
    return AgeRegressor(backbone, head, model_config={"name": name, "img_size": IMG}, lr=1e-2, total_steps=8, **regime)


def train(module: AgeRegressor, epochs: int) -> Snapshots:
    snaps = Snapshots()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[snaps],
    )  # fmt: skip
    trainer.fit(module, DataLoader(Faces(), batch_size=8))
    return snaps


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {k for k, v in after.items() if k.startswith(prefix) and not torch.equal(v, before[k])}


def test_frozen_backbone_is_bit_identical_after_one_and_two_epochs_and_the_head_trains() -> None:
    # A batch-norm backbone: its running statistics are buffers in the checkpoint and must not move either.
    module = regressor("timm:resnet10t", freeze="backbone")
    start = {k: v.clone() for k, v in module.state_dict().items()}
    assert any("running_mean" in k for k in start)
    snaps = train(module, 2)
    assert len(snaps.states) == 2
    for state in snaps.states:
        for key in (k for k in start if k.startswith("backbone.")):
            assert torch.equal(state[key], start[key]), key
        assert changed(start, state, "head."), "the head did not train"
    assert changed(snaps.states[0], snaps.states[1], "head.")
    assert not module.backbone.training and module.head.training
    assert all(not p.requires_grad and p.grad is None for p in module.backbone.parameters())
    assert module.trainable_parameters() == sum(p.numel() for p in module.head.parameters())
    grouped = {id(p) for g in module.parameter_groups() for p in g["params"]}
    assert grouped == {id(p) for p in module.head.parameters()}  # no optimizer state for frozen parameters


@pytest.mark.parametrize("name", ["vit-tiny", "hybrid-atto", "convnext-atto"])
def test_train_last_blocks_trains_exactly_the_declared_last_block(name: str) -> None:
    module = regressor(name, train_last_blocks=1)
    layout = backbone_blocks(module.backbone)
    last = len(layout.blocks)
    expected = {f"backbone.{n}" for n, _ in module.backbone.named_parameters() if layout.layer_of(n) >= last}
    assert expected and all(any(n.startswith(f"backbone.{p}") for p in layout.blocks[-1]) or layout.layer_of(
        n[len("backbone."):]) == last + 1 for n in expected)  # fmt: skip
    start = {k: v.clone() for k, v in module.state_dict().items()}
    snaps = train(module, 1)
    moved = changed(start, snaps.states[-1], "backbone.")
    trained = {f"backbone.{n}" for n, p in module.backbone.named_parameters() if p.requires_grad}
    assert trained == expected
    assert moved and moved <= expected  # nothing outside the last block moved
    assert changed(start, snaps.states[-1], "head.")


def test_hybrid_blocks_are_trunk_stages_then_encoder_layers() -> None:
    layout = backbone_blocks(create_backbone("hybrid-atto", img_size=IMG))
    assert [b[-1] for b in layout.blocks] == [f"trunk.stages.{i}" for i in range(4)] + [
        "encoder.layers.0",
        "encoder.layers.1",
    ]
    assert layout.embed == ("trunk.stem",) and layout.layer_of("norm.weight") == 7


def test_layer_decay_learning_rates_follow_the_formula_per_group() -> None:
    decay, mult, lr = 0.7, 0.5, 1e-2
    module = regressor("vit-tiny", layer_decay=decay, backbone_lr_mult=mult)
    depth = len(module.backbone.model.blocks)

    def expected(name: str) -> float:  # BEiT/MAE: embeddings F^(D+1), block i F^(D-i), head lr
        if name.startswith("head."):
            return lr
        inner = name[len("backbone.model.") :]
        if m := re.match(r"blocks\.(\d+)\.", inner):
            return lr * mult * decay ** (depth - int(m.group(1)))
        if inner.startswith("norm."):  # timm's group matcher puts the final norm with the last block
            return lr * mult * decay
        assert inner.split(".")[0] in ("cls_token", "pos_embed", "patch_embed"), inner
        return lr * mult * decay ** (depth + 1)

    names = {id(p): n for n, p in module.named_parameters()}
    seen = 0
    for group in module.parameter_groups():
        for param in group["params"]:
            assert group.get("lr", lr) == pytest.approx(expected(names[id(param)]), rel=1e-12), names[id(param)]
            seen += 1
    assert seen == len(names)
    optimizer = module.configure_optimizers()["optimizer"]
    assert sorted({g["lr"] for g in optimizer.param_groups}) == sorted(
        {group.get("lr", lr) for group in module.parameter_groups()}
    )


class NoBlocks(nn.Module):
    """A third-party backbone that declares no blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.num_features = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.parametrize("freeze", ["none", "backbone"])
def test_third_party_backbone_without_blocks_trains_with_freeze(freeze: str) -> None:
    module = regressor("third-party", NoBlocks(), freeze=freeze)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    snaps = train(module, 1)
    assert bool(changed(start, snaps.states[-1], "backbone.")) == (freeze == "none")
    assert changed(start, snaps.states[-1], "head.")


@pytest.mark.parametrize(
    ("regime", "key"),
    [({"train_last_blocks": 1}, "model.train_last_blocks"), ({"layer_decay": 0.8}, "optim.layer_decay")],
)
def test_third_party_backbone_refuses_block_regimes_clearly(regime: dict, key: str) -> None:
    from agebench.validate import check_blocks

    with pytest.raises(UserError, match=rf"^{re.escape(key)}: backbone 'third-party' declares no blocks"):
        regressor("third-party", NoBlocks(), **regime)
    model = {"name": "convnext-atto", **({"train_last_blocks": 1} if "train_last_blocks" in regime else {})}
    optim = {"layer_decay": 0.8} if "layer_decay" in regime else {}
    cfg = from_dict(FitConfig, {"model": model, "optim": optim})
    with pytest.raises(UserError, match=rf"^{re.escape(key)}: backbone 'convnext-atto' declares no blocks"):
        check_blocks(cfg, NoBlocks())


def test_regime_keys_are_hash_neutral_at_their_defaults_and_validated() -> None:
    from agebench.config import to_dict
    from agebench.validate import check_tuning

    base = to_dict(FitConfig())
    new_model, new_optim = ("freeze", "train_last_blocks", "label"), ("layer_decay", "backbone_lr_mult")
    old = {
        **base,
        "model": {k: v for k, v in base["model"].items() if k not in new_model},
        "optim": {k: v for k, v in base["optim"].items() if k not in new_optim},
    }
    assert config_hash(base) == config_hash(old)
    labelled = {**base, "model": {**base["model"], "label": "mine"}}
    assert config_hash(labelled) == config_hash(base)  # a label names the run; it does not change it
    frozen = {**base, "model": {**base["model"], "freeze": "backbone"}}
    assert config_hash(frozen) != config_hash(base)
    for model, optim, message in [
        ({"freeze": "all"}, {}, "model.freeze='all': expected one of none, backbone"),
        ({"train_last_blocks": 0}, {}, "model.train_last_blocks=0: expected an integer >= 1"),
        ({"freeze": "backbone", "train_last_blocks": 2}, {}, "conflicts with model.freeze=backbone"),
        ({}, {"layer_decay": 1.5}, r"optim.layer_decay=1.5: expected a number in \(0, 1\]"),
        ({}, {"backbone_lr_mult": 0}, "optim.backbone_lr_mult=0.0: expected a finite number > 0"),
        ({"label": "a/b"}, {}, "model.label='a/b': a cell name is a folder name"),
    ]:
        with pytest.raises(UserError, match=message):
            check_tuning(from_dict(FitConfig, {"model": model, "optim": optim}))
