"""Configs: composition with `extends`, dotted overrides, and unknown keys rejected by name."""

from __future__ import annotations

import pytest

from agebench.config import ConfigError, config_hash, load_fit_config, to_dict


def test_extends_and_overrides_compose(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  img_size: 64\n  batch_size: 8\noptim:\n  lr: 1.0e-3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ndata:\n  batch_size: 16\n")
    cfg = load_fit_config(tmp_path / "child.yaml", ["optim.lr=5e-4", "trainer.max_epochs=2", "model.kwargs.depth=1"])
    assert cfg.data.img_size == 64 and cfg.data.batch_size == 16
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert cfg.trainer == {"max_epochs": 2}
    assert cfg.model.kwargs == {"depth": 1}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.imgsize=3", "unknown config key 'data.imgsize' (did you mean 'img_size'?)"),
        ("trainer.max_epoch=3", "'trainer.max_epoch': not a Lightning Trainer argument (did you mean 'max_epochs'?)"),
        ("data.img_size=big", "data.img_size: expected int, got 'big'"),
        ("data.allow_leaky_splits=1", "expected true/false"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values"),
        ("nonsense", "is not of the form key=value"),
    ],
)
def test_bad_keys_and_values_name_themselves(override, message):
    with pytest.raises(ConfigError) as err:
        load_fit_config(None, [override])
    assert message in str(err.value)


def test_bad_yaml_and_missing_file_are_user_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml:.*invalid YAML"):
        load_fit_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_fit_config(tmp_path / "missing.yaml")


def test_config_hash_is_stable_and_sensitive():
    a = to_dict(load_fit_config(None, ["seed=1"]))
    b = to_dict(load_fit_config(None, ["seed=1"]))
    c = to_dict(load_fit_config(None, ["seed=2"]))
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_one_node_hashes_as_a_config_without_num_nodes() -> None:
    """The launch scripts pass trainer.num_nodes; at 1 it must not make finished cells stale (agebench 0.6)."""
    from agebench.config import config_hash

    base = {"model": {"name": "convnext-atto"}, "trainer": {"devices": 1}}
    one = {"model": {"name": "convnext-atto"}, "trainer": {"devices": 1, "num_nodes": 1}}
    two = {"model": {"name": "convnext-atto"}, "trainer": {"devices": 1, "num_nodes": 2}}
    assert config_hash(one) == config_hash(base) != config_hash(two)
