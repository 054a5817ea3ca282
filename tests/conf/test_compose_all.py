"""Compose every option of every config group with the real conf/ tree and instantiate it."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from apt.build import model_config
from apt.checks import check_run
from apt.core.errors import ConfigProblems
from apt.data import load_dataset
from apt.modeling import ModelBuilder
from apt.schedule import Schedule
from tests.helpers import CONF, compose_cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def is_valid(cfg) -> bool:
    """The config check passes (it raises ConfigProblems otherwise); plugins torn down again."""
    check_run(cfg).plugins.teardown_all()
    return True


def test_every_group_has_options():
    for group in ("model", "provider/attention", "provider/ffn", "provider/router", "plugin",
                  "schedule", "data", "trainer", "optim", "experiment"):
        assert options(group), group


def _build_and_forward(cfg):
    checked = check_run(cfg)
    try:
        builder = ModelBuilder(model_config(checked.config, 16), registry=checked.plugins.registry)
        model = builder.build_model()
        x = torch.randint(0, 16, (2, 8))
        logits, loss = model(x, x)
        assert logits.shape == (2, 8, 16) and torch.isfinite(loss)
    finally:
        checked.plugins.teardown_all()
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
        assert is_valid(cfg), option
        builder = _build_and_forward(cfg)
        chosen = {"attention": builder.attention_name, "ffn": builder.ffn_name,
                  "router": builder.router_name}[kind]
        assert chosen == cfg.provider[kind].name


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option(option):
    cfg = compose_cfg(f"model={option}")
    assert is_valid(cfg)
    builder = _build_and_forward(cfg)
    assert builder.config.d_model == cfg.model.d_model


@pytest.mark.parametrize("option", options("plugin"))
def test_every_plugin_option_loads_and_sets_up(option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # plugins with relative output files (training.log) write here
    cfg = compose_cfg(f"plugin=[{option}]")
    assert list(cfg.plugin) == [option]
    checked = check_run(cfg)  # creates and sets up the plugin, as a run does
    assert checked.plugins.get_plugin(option).get_name() == option
    checked.plugins.teardown_all()


def test_several_plugins_each_under_its_key():
    cfg = compose_cfg("plugin=[logging,early_stopping,gradient_clipping]", "plugin.early_stopping.patience=2")
    assert list(cfg.plugin) == ["logging", "early_stopping", "gradient_clipping"]
    assert cfg.plugin.early_stopping.patience == 2


@pytest.mark.parametrize("option", options("schedule"))
def test_every_schedule_option(option):
    """Each preset passes the config check with the plugins it schedules, and does what its
    entries say: a plugin is off until its epoch/step and on from it, an annealed value is
    ``start`` at the first position and ``end`` at the last."""
    entries = OmegaConf.to_container(compose_cfg(f"schedule={option}").schedule)
    enables = {k: m for k in entries if (m := re.fullmatch(r"enable_(?P<plugin>\w+)_at_(?P<by>epoch|step)", k))}
    plugins = sorted({m["plugin"] for m in enables.values()})
    cfg = compose_cfg(f"schedule={option}", "trainer.max_epochs=4",
                      *([f"plugin=[{','.join(plugins)}]"] if plugins else []))
    assert is_valid(cfg)
    schedule = Schedule(cfg.schedule, max_epochs=4, max_steps=20)
    assert sorted(schedule.scheduled_plugins) == plugins
    assert sorted(schedule.params) == sorted(set(entries) - set(enables))
    assert option == "default" or plugins or schedule.params, f"schedule={option} schedules nothing"
    for key, at in entries.items():
        if key in enables:
            plugin, by = enables[key]["plugin"], enables[key]["by"]
            assert not schedule.should_enable_plugin(plugin, **{by: at - 1}), key
            assert schedule.should_enable_plugin(plugin, **{by: at}), key
        else:
            spec = entries[key]
            by = spec.get("by", "epoch") if isinstance(spec, dict) else "epoch"
            last = {"epoch": 4, "step": 20}[by]
            start, end = (spec["start"], spec["end"]) if isinstance(spec, dict) else (spec, spec)
            assert schedule.get(key, **{by: 1}) == pytest.approx(start), key
            assert schedule.get(key, **{by: last}) == pytest.approx(end), key


@pytest.mark.parametrize("option", options("optim"))
def test_every_optim_option(option):
    cfg = compose_cfg(f"optim={option}")
    assert is_valid(cfg)
    opt = instantiate(cfg.optim.optimizer)([torch.nn.Parameter(torch.zeros(3))])
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
    extra = {"text": [f"data.path={text_file}"], "stdlib": ["data.max_bytes=50000"]}.get(option, [])
    if option == "tokens":
        from apt.data.prepare import main

        assert main([f"input={text_file}", f"out={tmp_path / 'tokens'}", "tokenizer=byte", "progress=false"]) == 0
        extra = [f"data.dir={tmp_path / 'tokens'}"]
    cfg = compose_cfg(f"data={option}", f"data.cache_dir={tmp_path}", *extra)
    assert is_valid(cfg)
    data = load_dataset(cfg.data)
    assert len(data.train) > cfg.data.block_size and data.vocab_size > 1


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_option(option):
    assert is_valid(compose_cfg(f"trainer={option}"))


# GPU presets (nanoGPT's GPU config) ask for CUDA and batch 64 x 256: built here on the CPU,
# small, after checking that a CPU-only machine refuses them as they are, in one line.
CPU_STAND_INS = ["trainer.device=cpu", "trainer.precision=fp32", "trainer.compile=false", "data.batch_size=2"]


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_preset(option, monkeypatch, text_file):
    monkeypatch.setenv("APT_SHAKESPEARE", str(text_file))
    extra: list[str] = []
    if option.endswith("_gpu") or "_gpu_" in option:
        cfg = compose_cfg(f"experiment={option}", base=[])
        assert cfg.trainer.device == "cuda" and cfg.trainer.precision == "bf16" and cfg.trainer.compile
        if not torch.cuda.is_available():
            with pytest.raises(ConfigProblems, match=r"trainer.device=cuda but CUDA is not available"):
                is_valid(cfg)
        extra = CPU_STAND_INS
    cfg = compose_cfg(f"experiment={option}", *extra, base=[])
    assert is_valid(cfg)
    _build_and_forward(cfg)


def test_gpu_presets_are_nanogpts_gpu_config():
    """shakespeare_gpu is nanoGPT's config/train_shakespeare_char.py, value for value."""
    cfg = compose_cfg("experiment=shakespeare_gpu", base=[])
    m, d, t, o = cfg.model, cfg.data, cfg.trainer, cfg.optim
    assert (m.num_layers, m.num_heads, m.d_model, m.dropout, m.bias) == (6, 6, 384, 0.2, False)
    assert (d.tokenizer, d.block_size, d.batch_size, t.grad_accum) == ("char", 256, 64, 1)
    assert (t.max_steps, t.eval_every, t.eval_batches, t.grad_clip) == (5000, 250, 200, 1.0)
    assert (o.optimizer.lr, list(o.optimizer.betas), o.weight_decay) == (1e-3, [0.9, 0.99], 0.1)
    assert (o.warmup_steps, o.decay, o.min_lr_ratio) == (100, "cosine", 0.1)  # min lr 1e-4
    fast = compose_cfg("experiment=shakespeare_gpu_fast", base=[])
    assert (fast.model.num_layers, fast.model.d_model, fast.data.block_size, fast.data.batch_size) == (6, 384, 256, 64)


def test_moe_align_preset_measures_the_run_in_epochs():
    # the command: `train.py plugin=[moe,align] schedule=moe_align trainer.max_epochs=4`
    cfg = compose_cfg("plugin=[moe,align]", "schedule=moe_align", "trainer.max_epochs=4", base=[])
    assert cfg.trainer.steps_per_epoch == 100 and cfg.trainer.max_steps is None
    assert cfg.trainer.max_epochs == 4
    assert cfg.schedule.enable_moe_at_epoch == 2 and cfg.schedule.enable_align_at_epoch == 3
    assert is_valid(cfg)
    # a command-line value still wins over the preset
    cfg = compose_cfg("schedule=moe_align", "trainer.steps_per_epoch=7", "trainer.max_epochs=6", base=[])
    assert cfg.trainer.steps_per_epoch == 7 and cfg.trainer.max_epochs == 6
