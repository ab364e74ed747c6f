"""Backbone registry, the backbone contract, the hybrid, pretrained loading and the AgeRegressor.

Every small built-in, one ``timm:`` model and one backbone from a (fake, installed-in-tmp) package's entry
point go through the same contract and "can it learn" tests, so a newly registered backbone is covered
without writing a test for it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import timm
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from agebench.cli import models as cli_models
from agebench.errors import UserError
from agebench.metrics import regression_metrics
from agebench.models import (
    AgeRegressor,
    ConvNeXtTransformer,
    RegressionHead,
    build_model,
    count_parameters,
    create_backbone,
    describe_backbones,
    get_backbone_spec,
    list_backbones,
    load_pretrained,
    warmup_cosine,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAKE_MODULE = "agebench_fake_backbones"
FAKE_SOURCE = textwrap.dedent(
    '''
    from torch import nn


    class TinyMLP(nn.Module):
        """Flattens the image, so it only works if the registry passed it the right img_size."""

        def __init__(self, img_size: int, width: int) -> None:
            super().__init__()
            self.img_size = img_size
            self.num_features = width
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * img_size * img_size, width), nn.GELU())

        def forward(self, x):
            return self.body(x)


    def make_mlp(img_size: int = 224, width: int = 64) -> TinyMLP:
        return TinyMLP(img_size, width)


    def make_broken(**kwargs):
        return nn.Linear(3, 3)  # no num_features
    '''
)
FAKE_ENTRY_POINTS = f"""\
[agebench.backbones]
fake-mlp = {FAKE_MODULE}:make_mlp
fake-broken = {FAKE_MODULE}:make_broken
fake-missing = agebench_no_such_module:make
convnext = {FAKE_MODULE}:make_broken
"""

SMALL_BUILTINS = [
    n for n in list_backbones() if get_backbone_spec(n).source == "builtin" and get_backbone_spec(n).small
]
FULL_BUILTINS = [
    n for n in list_backbones() if get_backbone_spec(n).source == "builtin" and not get_backbone_spec(n).small
]
CONTRACT_NAMES = [*SMALL_BUILTINS, "timm:resnet10t", "fake-mlp"]
# Learning rates that memorise 32 images in 40 AdamW steps: from-scratch ViTs diverge above ~2e-4 here,
# the single-layer MLP needs more.
LEARN_LR = {"fake-mlp": 1e-3}
IMG = 32

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(autouse=True)
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution declaring `agebench.backbones` entry points, like a third-party package."""
    site = tmp_path / "site"
    info = site / "agebench_fake_backbones-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agebench-fake-backbones\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(FAKE_ENTRY_POINTS)
    (site / f"{FAKE_MODULE}.py").write_text(FAKE_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, FAKE_MODULE, raising=False)
    return site


def synthetic_ages(n: int = 32, size: int = IMG, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose bright top band grows with the age, plus per-image noise: learnable and memorisable."""
    g = torch.Generator().manual_seed(seed)
    ages = torch.randint(10, 71, (n,), generator=g).float()
    images = torch.randn(n, 3, size, size, generator=g) * 0.3
    rows = (ages / 80 * size).round().long()
    for i in range(n):
        images[i, :, : rows[i]] += 1.0
    return images, ages


def as_batch(images: torch.Tensor, ages: torch.Tensor) -> dict:
    return {
        "image": images,
        "age": ages,
        "index": torch.arange(len(ages)),
        "path": [f"{i}.jpg" for i in range(len(ages))],
    }


# ---------------------------------------------------------------- registry


def test_builtins_come_in_full_and_small_sizes() -> None:
    names = list_backbones()
    for family in ("convnext", "vit", "hybrid"):
        assert family in names and get_backbone_spec(family).source == "builtin"
    assert set(SMALL_BUILTINS) == {"convnext-atto", "vit-tiny", "hybrid-atto", "hybrid-atto-trunk"}


def test_entry_points_are_listed_without_importing_their_package() -> None:
    names = list_backbones()
    assert {"fake-mlp", "fake-broken", "fake-missing"} <= set(names)
    assert names.count("convnext") == 1 and get_backbone_spec("convnext").source == "builtin"  # built-in wins
    assert get_backbone_spec("fake-mlp").source == "entry-point"
    assert FAKE_MODULE not in sys.modules
    backbone = create_backbone("fake-mlp", img_size=IMG, width=16)
    assert FAKE_MODULE in sys.modules
    assert backbone.num_features == 16 and backbone.img_size == IMG


def test_unknown_backbone_error_lists_the_registered_names() -> None:
    with pytest.raises(UserError, match="unknown backbone 'convnxt'") as info:
        create_backbone("convnxt")
    message = str(info.value)
    for name in ("convnext", "convnext-atto", "vit", "hybrid", "fake-mlp", "timm:<model_name>"):
        assert name in message
    assert "\n" not in message


def test_unknown_timm_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown timm model 'not_a_model'"):
        create_backbone("timm:not_a_model")


def test_backbones_breaking_the_contract_are_user_errors() -> None:
    with pytest.raises(UserError, match="'fake-broken'.*num_features"):
        create_backbone("fake-broken")
    with pytest.raises(UserError, match="'fake-missing': cannot load entry point"):
        create_backbone("fake-missing")
    with pytest.raises(UserError, match="'fake-mlp': rejected arguments"):
        create_backbone("fake-mlp", depth=3)
    with pytest.raises(UserError, match="'convnext-atto': rejected arguments.*'dpeth'"):
        create_backbone("convnext-atto", dpeth=3)


def test_timm_backbones_report_the_width_forward_returns() -> None:
    # MobileNetV3's conv_head widens 288 pooled channels to 1024: num_features must be the latter.
    backbone = create_backbone("timm:mobilenetv3_small_050", img_size=IMG)
    assert backbone.num_features == 1024
    assert backbone(torch.randn(2, 3, IMG, IMG)).shape == (2, 1024)
    # ViTs get img_size (their position embedding follows it); CNNs are built without it.
    vit = create_backbone("timm:vit_tiny_patch16_224", img_size=IMG, patch_size=8, depth=1)
    assert vit.model.pos_embed.shape[1] == 1 + (IMG // 8) ** 2


# ---------------------------------------------------------------- the backbone contract


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_backbone_contract(name: str) -> None:
    backbone, head = build_model(name, img_size=IMG)
    assert type(backbone.num_features) is int
    x = torch.randn(2, 3, IMG, IMG)
    features = backbone(x)
    assert features.shape == (2, backbone.num_features)
    assert head(features).shape == (2, 1)
    if get_backbone_spec(name).source != "entry-point":
        unpooled = backbone.forward_features(x)
        assert unpooled.shape[0] == 2 and unpooled.ndim in (3, 4)


@pytest.mark.parametrize("name", FULL_BUILTINS)
def test_full_size_builtins_honour_the_contract_at_224(name: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no compute
        backbone, head = build_model(name, img_size=224)
        out = head(backbone(torch.empty(2, 3, 224, 224)))
    assert out.shape == (2, 1)
    assert backbone.num_features == 768


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    # MSE, not L1: an L1 gradient on the output bias is a sum of signs, exactly 0 for a balanced batch.
    model = AgeRegressor.from_config({"name": name, "img_size": IMG}, loss="mse", age_mean=40.0, age_std=15.0)
    batch = as_batch(*synthetic_ages(4))
    # The second step is the one checked: some blocks start with a zero-initialised last norm (timm
    # ResNets' zero_init_last), which blocks gradients to the rest of the block for exactly one step.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for step in range(2):
        optimizer.zero_grad()
        model.training_step(batch, step).backward()
        if step == 0:
            optimizer.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_stack_learns_synthetic_ages(name: str) -> None:
    """40 steps of the real training_step / AdamW / warmup-cosine path memorise 32 images to < 1 year."""
    torch.manual_seed(0)
    images, ages = synthetic_ages(32)
    steps = 40
    model = AgeRegressor.from_config(
        {"name": name, "img_size": IMG},
        lr=LEARN_LR.get(name, 1e-4),
        weight_decay=0.0,
        warmup_steps=5,
        total_steps=steps,
        age_mean=float(ages.mean()),
        age_std=float(ages.std()),
    )
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    batch = as_batch(images, ages)
    model.train()
    with torch.no_grad():
        start_mae = (model(images) - ages).abs().mean().item()
    for step in range(steps):
        loss = model.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():  # train mode, as the logged train/mae (BatchNorm uses batch statistics)
        mae = (model(images) - ages).abs().mean().item()
    assert start_mae > 8.0  # the task is not trivially solved by predicting the mean age
    assert mae < 1.0, f"{name}: training MAE {mae:.2f} after {steps} steps (started at {start_mae:.2f})"


# ---------------------------------------------------------------- the hybrid


def test_default_hybrid_has_the_papers_parameter_count() -> None:
    with torch.device("meta"):
        backbone, head = build_model("hybrid", img_size=224)
    total = count_parameters(backbone)[0] + count_parameters(head)[0]
    assert abs(total - 33.42e6) / 33.42e6 < 0.01
    assert total == 33_571_937  # the count documented in agebench/models/hybrid.py
    assert isinstance(backbone.proj, nn.Identity)  # ConvNeXt-Tiny is already 768 wide
    assert backbone.pos_embed.shape == (1, 1 + 7 * 7, 768)
    assert len(backbone.encoder.layers) == 1


def test_hybrid_position_embedding_follows_img_size_and_is_resampled_for_other_sizes() -> None:
    backbone = create_backbone("hybrid-atto", img_size=64)
    assert isinstance(backbone, ConvNeXtTransformer)
    assert backbone.pos_embed.shape == (1, 1 + 2 * 2, 160)
    assert isinstance(backbone.proj, nn.Linear) and backbone.proj.in_features == 320
    backbone.eval()
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, 160)
    # A 96 px input gives a 3 x 3 map: the 2 x 2 embedding is resampled, class position kept as is.
    assert backbone.forward_features(torch.randn(2, 3, 96, 96)).shape == (2, 1 + 3 * 3, 160)
    resampled = backbone._pos_embed((3, 3))
    torch.testing.assert_close(resampled[:, :1], backbone.pos_embed[:, :1])
    assert backbone._pos_embed((2, 2)) is backbone.pos_embed
    with pytest.raises(ValueError, match="at least 32 px"):
        create_backbone("hybrid-atto", img_size=16)


def test_hybrid_average_pooling_has_no_class_token_and_explains_every_token() -> None:
    from agebench.report.cam_targets import cam_layers

    backbone = create_backbone("hybrid-atto", img_size=64, pool="avg", trunk_kwargs={"conv_mlp": False})
    assert backbone.cls_token is None and backbone.num_prefix_tokens == 0
    assert backbone.pos_embed.shape == (1, 2 * 2, backbone.num_features)
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone(x), backbone.forward_features(x).mean(dim=1))
    assert backbone.forward_features(torch.randn(1, 3, 96, 96)).shape == (1, 3 * 3, backbone.num_features)
    encoder_layer = cam_layers(backbone, 64)[0]
    tokens = torch.randn(2, 4, backbone.num_features)
    assert encoder_layer.reshape(tokens).shape == (2, backbone.num_features, 2, 2)  # no token dropped
    assert not backbone.trunk.stages[0].blocks[0].use_conv_mlp  # trunk_kwargs reach timm
    with pytest.raises(ValueError, match="'cls' or 'avg'"):
        create_backbone("hybrid-atto", img_size=64, pool="max")


def test_zero_init_residual_hybrid_starts_as_its_trunk_and_still_learns_the_encoder() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("hybrid-atto", img_size=64, pool="avg", zero_init_residual=True).eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = backbone.proj(backbone.feature_map(x).flatten(2).transpose(1, 2)) + backbone.pos_embed
    torch.testing.assert_close(backbone(x), backbone.norm(tokens).mean(dim=1))  # every layer is the identity
    backbone(x).square().sum().backward()
    assert all(layer.linear2.weight.grad.abs().sum() > 0 for layer in backbone.encoder.layers)


# ---------------------------------------------------------------- pretrained weights


def _tensors_equal(a: nn.Module, b: nn.Module, skip: set[str] = frozenset()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


def test_load_pretrained_reads_safetensors_with_a_ddp_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone("convnext-atto")
    state = {f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}
    del state["module.model.stem.0.weight"]
    state["module.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    target = create_backbone("convnext-atto")
    assert not _tensors_equal(source, target)
    report = load_pretrained(target, tmp_path / "w.safetensors")
    assert report.stripped_prefix == "module." and report.added_prefix == ""
    assert report.missing == ["model.stem.0.weight"]
    assert report.unexpected == ["module.extra.weight"]
    assert report.loaded == len(state) - 1
    assert _tensors_equal(source, target, skip={"model.stem.0.weight"})
    assert not torch.equal(source.model.stem[0].weight, target.model.stem[0].weight)
    with pytest.raises(UserError, match="missing: model.stem.0.weight"):
        load_pretrained(target, tmp_path / "w.safetensors", strict=True)


def test_load_pretrained_reads_checkpoints_and_bare_timm_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = AgeRegressor.from_config({"name": "convnext-atto", "img_size": IMG})
    # A Lightning-style checkpoint of the whole regressor: its backbone part goes into a bare backbone.
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "run.ckpt")
    backbone, _ = build_model("convnext-atto", img_size=IMG, pretrained_path=tmp_path / "run.ckpt")
    assert _tensors_equal(trained.backbone, backbone)
    # A bare timm state dict ("stem.0.weight") goes into our wrapper ("model.stem.0.weight").
    timm_model = timm.create_model("convnext_atto", num_classes=0)
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    report = load_pretrained(backbone, tmp_path / "timm.pth")
    assert report.added_prefix == "model." and not report.missing and not report.unexpected
    assert _tensors_equal(timm_model, backbone.model)


def test_load_pretrained_reports_shape_mismatches(tmp_path: Path) -> None:
    save_file(create_backbone("hybrid-atto", img_size=64).state_dict(), tmp_path / "h.safetensors")
    report = load_pretrained(create_backbone("hybrid-atto", img_size=96), tmp_path / "h.safetensors")
    assert report.mismatched == ["pos_embed: (1, 5, 160) vs (1, 10, 160)"]
    assert report.missing == ["pos_embed"]


class _RunsCode:
    """A pickle payload that would create a directory when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_load_pretrained_refuses_pickles_with_arbitrary_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused"):
        load_pretrained(nn.Linear(2, 1), tmp_path / "evil.pt")
    assert not marker.exists()


def test_load_pretrained_rejects_missing_and_unrelated_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_pretrained(nn.Linear(2, 1), tmp_path / "nope.safetensors")
    save_file({"foo.bar": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="none of its 1 keys match"):
        load_pretrained(nn.Linear(2, 1), tmp_path / "other.safetensors")


# ---------------------------------------------------------------- AgeRegressor


def test_warmup_cosine_matches_hand_computed_values() -> None:
    # warmup 4, total 12, floor 0.1: (s+1)/4 during warmup; then 0.1 + 0.9 * (1 + cos(pi (s-4)/8)) / 2
    expected = {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 6: 0.1 + 0.45 * (1 + math.sqrt(0.5)), 8: 0.55, 12: 0.1, 50: 0.1}
    for step, value in expected.items():
        assert warmup_cosine(step, 4, 12, 0.1) == pytest.approx(value), step
    assert warmup_cosine(0, 0, 10, 0.0) == 1.0
    assert warmup_cosine(5, 0, 10, 0.0) == pytest.approx(0.5)


def test_scheduler_applies_warmup_cosine_every_step() -> None:
    model = AgeRegressor.from_config({"name": "fake-mlp", "img_size": 8}, lr=1e-3, warmup_steps=2, total_steps=6)
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([1e-3 * warmup_cosine(s, 2, 6, 0.01) for s in range(8)])
    # Without warmup_steps, warmup_fraction of the total: 5% of 100 steps.
    model = AgeRegressor.from_config({"name": "fake-mlp", "img_size": 8}, total_steps=100)
    scheduler = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.lr_lambdas[0].keywords["warmup_steps"] == 5


def test_weight_decay_skips_norms_biases_position_embeddings_and_class_tokens() -> None:
    model = AgeRegressor.from_config({"name": "hybrid-atto", "img_size": IMG}, weight_decay=0.05, total_steps=10)
    decay, no_decay = model.configure_optimizers()["optimizer"].param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    undecayed = {id(p) for p in no_decay["params"]}
    names = {n: id(p) in undecayed for n, p in model.named_parameters()}
    assert names["backbone.pos_embed"] and names["backbone.cls_token"]
    assert names["backbone.norm.weight"] and names["backbone.proj.bias"] and names["head.mlp.0.bias"]
    assert not names["backbone.proj.weight"] and not names["head.mlp.0.weight"]
    assert not names["backbone.trunk.stem.0.weight"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_non_finite_loss_stops_training_with_the_step() -> None:
    model = AgeRegressor.from_config({"name": "fake-mlp", "img_size": 8})
    images, ages = synthetic_ages(4, size=8)
    ages[1] = float("nan")
    with pytest.raises(FloatingPointError, match="training loss is nan at global step 0"):
        model.training_step(as_batch(images, ages), 0)


def test_head_predicts_standardised_ages_and_outputs_years() -> None:
    model = AgeRegressor.from_config({"name": "fake-mlp", "img_size": 8}, age_mean=40.0, age_std=10.0)
    last = model.head.mlp[-1]
    nn.init.zeros_(last.weight)
    nn.init.constant_(last.bias, 0.5)
    pred = model(torch.randn(3, 3, 8, 8))
    torch.testing.assert_close(pred, torch.full((3,), 45.0))  # 40 + 10 * 0.5
    assert float(model.state_dict()["head.age_std"]) == 10.0  # the regression head owns the standardisation
    with pytest.raises(UserError, match="age_std"):
        AgeRegressor.from_config({"name": "fake-mlp", "img_size": 8}, age_std=0.0)


def test_regression_head_shapes() -> None:
    assert RegressionHead(12)(torch.randn(5, 12)).shape == (5, 1)
    linear = RegressionHead(12, hidden=0)
    assert linear(torch.randn(5, 12)).shape == (5, 1)
    assert count_parameters(linear) == (13, 13)
    assert count_parameters(RegressionHead(768))[0] == 768 * 256 + 256 + 256 + 1
    with pytest.raises(ValueError):
        AgeRegressor()


def test_trainer_fit_test_predict_and_reload_from_checkpoint(tmp_path: Path) -> None:
    """The Lightning path end to end: logged keys, metrics agreeing with predictions, and a faithful reload."""
    pl.seed_everything(0, workers=False, verbose=False)
    images, ages = synthetic_ages(16)
    items = [{"image": images[i], "age": ages[i], "index": i, "path": f"{i}.jpg"} for i in range(16)]
    loader = DataLoader(items, batch_size=8)
    model = AgeRegressor.from_config(
        {"name": "convnext-atto", "img_size": IMG}, lr=1e-4, age_mean=float(ages.mean()), age_std=float(ages.std())
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader, loader)
    logged = set(trainer.callback_metrics)
    assert {"train/loss", "train/mae", "val/loss", "val/mae", "val/rmse", "val/cs5"} <= logged
    tested = trainer.test(model, loader, verbose=False)[0]
    assert {f"test/cs{k}" for k in range(1, 11)} | {"test/mae", "test/rmse", "test/loss"} <= set(tested)

    outputs = trainer.predict(model, loader)
    assert set(outputs[0]) == {"index", "pred", "age", "path"}
    index = torch.cat([o["index"] for o in outputs])
    pred = torch.cat([o["pred"] for o in outputs])
    assert index.tolist() == list(range(16))
    expected = regression_metrics(ages.numpy(), pred.numpy())
    assert tested["test/mae"] == pytest.approx(expected["mae"], rel=1e-4)
    assert tested["test/rmse"] == pytest.approx(expected["rmse"], rel=1e-4)
    assert tested["test/cs5"] == pytest.approx(expected["cs"][5])

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    reloaded = AgeRegressor.load_from_checkpoint(tmp_path / "last.ckpt", map_location="cpu").eval()
    assert reloaded.hparams.model_config == {"name": "convnext-atto", "img_size": IMG}
    assert float(reloaded.head.age_mean) == pytest.approx(float(ages.mean()))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), model.eval()(images))


# ---------------------------------------------------------------- catalogue and CLI


def test_count_parameters_separates_trainable() -> None:
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == (8, 6)


def test_describe_backbones_counts_every_name_and_reports_broken_ones() -> None:
    rows = {r["name"]: r for r in describe_backbones()}
    assert set(rows) == set(list_backbones())
    assert rows["convnext"]["params"] == 27_820_128 + 197_121
    assert rows["convnext"]["backbone_params"] == 27_820_128
    assert rows["vit"]["num_features"] == 768 and rows["vit"]["source"] == "builtin"
    assert rows["fake-mlp"]["source"] == "entry-point" and rows["fake-mlp"]["params"] > 0
    assert "num_features" in rows["fake-broken"]["error"] and rows["fake-broken"]["params"] is None


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    cli_models.add_arguments(parser)
    assert cli_models.run(parser.parse_args(argv)) == 0
    return capsys.readouterr().out


def test_cli_models_prints_json_and_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(_cli(["--json", "--img-size", "64"], capsys))
    by_name = {r["name"]: r for r in rows}
    assert by_name["hybrid-atto"]["img_size"] == 64 and by_name["hybrid-atto"]["num_features"] == 160
    table = _cli([], capsys)
    assert "hybrid-atto" in table and "33.57M" in table
