"""Pretrained weights offline: fetched ahead into a folder and loaded from it, or one clear error.

No test touches the network: downloads are faked with a randomly initialised timm model saved to a file,
and "no network" is forced through HF_HUB_OFFLINE or by making the hub's TCP connect fail.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from agebench.cli import main
from agebench.errors import UserError
from agebench.models import build_model
from agebench.models import fetch as F
from agebench.models import weights as W
from agebench.models.registry import list_backbones

BUILTINS = [
    n for n in list_backbones() if n in ("convnext", "convnext-atto", "vit", "vit-tiny", "hybrid", "hybrid-atto")
]


def fake_download(tmp: Path):
    """A downloader that saves a seeded random-init timm model of the spec's architecture (timm's key names)."""

    def download(spec: W.WeightSpec) -> Path:
        import timm

        torch.manual_seed(123)
        model = timm.create_model(spec.architecture, pretrained=False)
        path = tmp / f"hub-{spec.key}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path

    return download


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "cached_file", lambda spec: None)  # an empty Hugging Face cache


def test_timm_names_are_what_each_builtin_is_built_from():
    assert F.timm_names("convnext-atto") == ["convnext_atto"]
    assert F.timm_names("hybrid-atto") == ["convnext_atto"]
    assert F.timm_names("vit-tiny", img_size=32) == ["vit_tiny_patch16_224"]
    assert W.weight_spec("convnext_atto").key == "convnext_atto.d2_in1k"


def test_fetch_then_load_from_weights_dir_offline(tmp_path, offline, capsys):
    to = tmp_path / "weights"
    index = F.fetch(["convnext-atto", "hybrid-atto"], to, download=fake_download(tmp_path), log=lambda s: None)
    assert (to / "convnext_atto.d2_in1k.safetensors").is_file()
    assert index["convnext_atto.d2_in1k"]["models"] == ["convnext-atto", "hybrid-atto"]
    assert len(index["convnext_atto.d2_in1k"]["sha256"]) == 64
    backbone, _ = build_model("convnext-atto", img_size=32, pretrained=True, weights_dir=to)
    from safetensors.torch import load_file

    stem = load_file(str(to / "convnext_atto.d2_in1k.safetensors"))["stem.0.weight"]
    assert torch.equal(backbone.model.stem[0].weight.detach(), stem)
    # The hybrid's trunk is found in the same folder.
    hybrid, _ = build_model("hybrid-atto", img_size=32, pretrained=True, weights_dir=to)
    assert torch.equal(hybrid.trunk.stem[0].weight.detach(), stem)
    assert main(["weights", "list", "convnext-atto", "--weights-dir", str(to)]) == 0
    assert "weights_dir" in capsys.readouterr().out


@pytest.mark.parametrize("name", BUILTINS)
def test_pretrained_offline_is_one_line_naming_model_weights_and_ways_out(name, offline):
    with pytest.raises(UserError) as err:
        build_model(name, img_size=64, pretrained=True)
    text = str(err.value)
    assert "\n" not in text and repr(name) in text
    assert "pretrained_path" in text and f"agebench weights fetch {name}" in text
    assert "HF_HUB_OFFLINE=1" in text


def test_without_the_offline_flag_an_unreachable_hub_is_the_same_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(W, "cached_file", lambda spec: None)
    monkeypatch.setattr(W, "_can_connect", lambda host, port, timeout: False)
    with pytest.raises(UserError, match="huggingface.co cannot be reached"):
        build_model("vit-tiny", img_size=32, pretrained=True)


def test_can_connect_fails_fast_on_a_closed_port():
    with socket.socket() as s:  # a port nobody listens on: bind, then close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    W._can_connect.cache_clear()
    assert W._can_connect("127.0.0.1", port, 1.0) is False


def test_weights_list_of_a_config_exits_1_when_missing(tmp_path, offline, capsys):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("model: {name: convnext-atto, pretrained: true}\ndata: {img_size: 32}\n")
    assert main(["weights", "list", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "convnext_atto.d2_in1k" in out and "missing" in out


def test_fetch_needs_models_and_a_folder(capsys):
    assert main(["weights", "fetch", "vit"]) == 2
    assert "--to" in capsys.readouterr().err
