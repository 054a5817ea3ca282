"""Compose every option of every config group with the real conf/ tree and instantiate it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from apt.app import _model_builder, _optimizer_factory, load_plugins, new_plugin_manager, validate
from apt.data import load_dataset
from apt.schedule import Schedule
from apt.training.schema import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
BASE = ["model=tiny", "data=synthetic", "trainer=debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides, base=BASE):
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=[*base, *overrides])


def test_every_group_has_options():
    for group in ("model", "provider/attention", "provider/ffn", "provider/router", "plugin",
                  "schedule", "data", "trainer", "optim", "experiment"):
        assert options(group), group


def _build_and_forward(cfg):
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    pm = new_plugin_manager()
    assert load_plugins(pm, plain.get("plugin") or {}) == []
    builder = _model_builder(pm, plain)
    builder.config.vocab_size = 16
    model = builder.build_model()
    x = torch.randint(0, 16, (2, 8))
    logits, loss = model(x, x)
    assert logits.shape == (2, 8, 16) and torch.isfinite(loss)
    pm.teardown_all()
    return builder


@pytest.mark.parametrize("kind", ["attention", "ffn", "router"])
def test_every_provider_option_builds_a_model(kind):
    for option in options(f"provider/{kind}"):
        extra = [f"provider.{kind}.name=" + {"attention": "naive", "ffn": "swiglu", "router": "switch"}[kind]] \
            if option == "registered" else []
        if kind == "router":  # a router is only used by an MoE FFN
            extra.append("provider/ffn=moe")
            if option in ("switch",) or (option == "registered"):
                extra.append("provider.ffn.top_k=1")
        cfg = compose_cfg(f"provider/{kind}={option}", *extra)
        assert validate(cfg) == [], option
        builder = _build_and_forward(cfg)
        chosen = {"attention": builder.attention_name, "ffn": builder.ffn_name,
                  "router": builder.router_name}[kind]
        assert chosen == cfg.provider[kind].name


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option(option):
    cfg = compose_cfg(f"model={option}")
    assert validate(cfg) == []
    builder = _build_and_forward(cfg)
    assert builder.config.d_model == cfg.model.d_model


@pytest.mark.parametrize("option", options("plugin"))
def test_every_plugin_option_loads_and_sets_up(option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # plugins with relative output files (training.log) write here
    cfg = compose_cfg(f"plugin=[{option}]")
    assert list(cfg.plugin) == [option]
    assert validate(cfg) == []
    from omegaconf import OmegaConf

    pm = new_plugin_manager()
    assert load_plugins(pm, OmegaConf.to_container(cfg.plugin, resolve=True)) == []
    pm.setup_all()
    assert pm.get_plugin(option).get_name() == option
    pm.teardown_all()


def test_several_plugins_each_under_its_key():
    cfg = compose_cfg("plugin=[logging,early_stopping,gradient_clipping]", "plugin.early_stopping.patience=2")
    assert list(cfg.plugin) == ["logging", "early_stopping", "gradient_clipping"]
    assert cfg.plugin.early_stopping.patience == 2


@pytest.mark.parametrize("option", options("schedule"))
def test_every_schedule_option(option):
    cfg = compose_cfg(f"schedule={option}", "trainer.max_epochs=4")
    Schedule(cfg.schedule, max_epochs=4, max_steps=20)


@pytest.mark.parametrize("option", options("optim"))
def test_every_optim_option(option):
    cfg = compose_cfg(f"optim={option}")
    assert validate(cfg) == []
    opt = _optimizer_factory(cfg)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == cfg.optim.optimizer.lr


@pytest.fixture
def text_file(tmp_path):
    """A small UTF-8 corpus, so the tests do not depend on ../shared being present."""
    path = tmp_path / "corpus.txt"
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog; ÆØÅ {i * i}\n" for i in range(600)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("option", options("data"))
def test_every_data_option(option, tmp_path, text_file):
    extra = [f"data.path={text_file}"] if option == "text" else []
    if option == "tokens":
        from apt.data.prepare import main

        assert main([f"input={text_file}", f"out={tmp_path / 'tokens'}", "tokenizer=byte", "progress=false"]) == 0
        extra = [f"data.dir={tmp_path / 'tokens'}"]
    cfg = compose_cfg(f"data={option}", f"data.cache_dir={tmp_path}", "data.max_bytes=50000", *extra)
    assert validate(cfg) == []
    data = load_dataset(cfg.data)
    assert len(data.train) > cfg.data.block_size and data.vocab_size > 1


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_option(option):
    assert validate(compose_cfg(f"trainer={option}")) == []


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_preset(option, monkeypatch, text_file):
    monkeypatch.setenv("APT_SHAKESPEARE", str(text_file))
    cfg = compose_cfg(f"experiment={option}", base=[])
    assert validate(cfg) == []
    _build_and_forward(cfg)


def test_moe_align_preset_measures_the_run_in_epochs():
    # the command: `train.py plugin=[moe,align] schedule=moe_align trainer.max_epochs=4`
    cfg = compose_cfg("plugin=[moe,align]", "schedule=moe_align", "trainer.max_epochs=4", base=[])
    assert cfg.trainer.steps_per_epoch == 100 and cfg.trainer.max_steps is None
    assert cfg.trainer.max_epochs == 4
    assert cfg.schedule.enable_moe_at_epoch == 2 and cfg.schedule.enable_align_at_epoch == 3
    assert validate(cfg) == []
    # a command-line value still wins over the preset
    cfg = compose_cfg("schedule=moe_align", "trainer.steps_per_epoch=7", "trainer.max_epochs=6", base=[])
    assert cfg.trainer.steps_per_epoch == 7 and cfg.trainer.max_epochs == 6
