"""APTConfig: defaults, dict/YAML round trips, unknown keys kept, validation messages."""

import pytest

from apt.core import APTConfig


def test_defaults_and_d_ff():
    c = APTConfig(d_model=96)
    assert c.d_ff == 384 and c.plugins == [] and c.attention_name is None and c.extra == {}
    assert APTConfig(d_model=96, d_ff=100).d_ff == 100
    assert APTConfig(plugins="moe").plugins == ["moe"]


def test_unknown_keys_are_kept_and_round_trip(tmp_path):
    data = {"d_model": 64, "plugins": ["my_plugin"], "my_plugin": {"lr": 0.1}, "schedules": {"x": 1}}
    c = APTConfig.from_dict(data)
    assert c.extra == {"my_plugin": {"lr": 0.1}} and c.schedules == {"x": 1}
    assert c.get("my_plugin") == {"lr": 0.1} and c["d_model"] == 64 and c.get("nope", 7) == 7
    assert "my_plugin" in c and "nope" not in c
    assert c.plugin_config("my_plugin") == {"lr": 0.1} and c.plugin_config("other") == {}
    out = c.to_dict()
    assert out["my_plugin"] == {"lr": 0.1} and "extra" not in out
    assert APTConfig.from_dict(out) == c
    with pytest.raises(KeyError):
        c["nope"]


def test_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("d_model: 32\nnum_heads: 2\nplugins:\n  - a\na:\n  k: true\n")
    c = APTConfig.from_yaml(path)
    assert (c.d_model, c.num_heads, c.plugins, c.plugin_config("a")) == (32, 2, ["a"], {"k": True})
    (tmp_path / "empty.yaml").write_text("")
    assert APTConfig.from_yaml(tmp_path / "empty.yaml") == APTConfig()
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        APTConfig.from_yaml(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        APTConfig.from_yaml(tmp_path / "missing.yaml")


def test_from_omegaconf_and_type_errors():
    from omegaconf import OmegaConf

    c = APTConfig.from_dict(OmegaConf.create({"d_model": 48, "x": {"y": 1}}))
    assert c.d_model == 48 and c.extra == {"x": {"y": 1}} and isinstance(c.extra["x"], dict)
    with pytest.raises(TypeError, match="expects a mapping"):
        APTConfig.from_dict([1, 2])


@pytest.mark.parametrize("kwargs, message", [
    ({"d_model": 0}, "d_model must be a positive integer, got 0"),
    ({"d_model": 30, "num_heads": 4}, "d_model=30 is not divisible by num_heads=4"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ({"norm": "batchnorm"}, "norm='batchnorm' is not one of ['layernorm', 'rmsnorm']"),
    ({"position": "alibi"}, "position='alibi' is not one of ['learned', 'rope']"),
    ({"position": "rope", "d_model": 12, "num_heads": 4}, "rope needs an even head dim, got 3"),
    ({"num_layers": True}, "num_layers must be a positive integer, got True"),
])
def test_validate_messages(kwargs, message):
    assert message in APTConfig(**kwargs).validate()


def test_valid_config_has_no_problems():
    assert APTConfig().validate() == []
