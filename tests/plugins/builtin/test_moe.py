"""moe plugin: the function is kept at the switch, refused routers, temperature, metrics, resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest
import torch
import yaml

from apt.core.provider import RouterProvider
from apt.core.registry import Registry
from apt.moe import MoELayer, TopKRouter
from apt.plugins.builtin.moe import MoEOptions, MoEPlugin
from apt.schedule import Schedule
from tests.helpers import CONF

from ._helpers import RecordingTrainer, batch, tiny_model


def _adamw(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-3)


def _plugin(**cfg):
    p = MoEPlugin({"num_experts": 4, "top_k": 2, "noise": 0.0, **cfg})
    assert p.validate_config()
    return p


def test_conf_file_lists_every_option_with_its_default():
    section = yaml.safe_load((CONF / "plugin" / "moe.yaml").read_text())["moe"]
    assert section.pop("_target_") == "apt.plugins.builtin.moe.MoEPlugin"
    assert section == asdict(MoEOptions())


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"top_k": 1, "router_config": {"normalize": True}},
        {"top_k": 1, "router": "switch", "router_config": {"normalize": True}},
        {"top_k": 3},
        {"num_experts": 2, "top_k": 2, "router_config": {"noise_std": 1.0}},
        {"capacity_factor": 0.5},
        {"layers": [1]},
    ],
    ids=["default", "top1-normalized", "switch-normalized", "top3", "noisy", "capacity", "one-layer"],
)
def test_every_accepted_configuration_keeps_the_function_at_the_switch(cfg):
    """With noise 0 the upcycled model equals the dense one: in eval mode (always dropless)
    and, when no randomness other than dropout is drawn and nothing is dropped, in training."""
    model = tiny_model(dropout=0.1)
    x, _ = batch()
    model.eval()
    dense_eval = model(x)[0]
    model.train()
    torch.manual_seed(3)
    dense_train = model(x)[0]
    _plugin(**cfg).upcycle(model)
    assert any(isinstance(b.ffn, MoELayer) for b in model.blocks)
    torch.manual_seed(3)
    moe_train = model(x)[0]
    if cfg.get("capacity_factor") is None and not cfg.get("router_config", {}).get("noise_std"):
        torch.testing.assert_close(moe_train, dense_train, atol=1e-5, rtol=1e-5)
    model.eval()
    torch.testing.assert_close(model(x)[0], dense_eval, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [{"top_k": 1}, {"top_k": 1, "router": "switch"}, {"top_k": 2, "router_config": {"normalize": False}}],
    ids=["topk-top1", "switch", "top2-unnormalized"],
)
def test_a_router_whose_weights_do_not_sum_to_one_is_refused_before_training(cfg):
    plugin = MoEPlugin({"num_experts": 4, **cfg})
    with pytest.raises(ValueError, match="combine weights that do not sum to 1.*normalize=true") as info:
        plugin.validate_config()
    assert "\n" not in str(info.value)


class _PlainTop1RouterProvider(RouterProvider):
    """A provider that cannot tell (no static answer): top-1, renormalised or not."""

    def create_router(self, d_model, num_experts, **kwargs):
        return TopKRouter(d_model, num_experts, top_k=1, normalize=self.config.get("normalize", False))


def test_a_router_whose_provider_cannot_tell_is_built_and_measured():
    registry = Registry()
    registry.register("router", "plain", _PlainTop1RouterProvider)
    refused = MoEPlugin({"num_experts": 4, "top_k": 1, "router": "plain"})
    with pytest.raises(ValueError, match=r"router 'plain' \(top_k=1, normalize=False\) gives combine weights "
                                         r"that do not sum to 1 \(off by up to 0\.[5-9]"):
        refused.check_router(registry)
    MoEPlugin({"num_experts": 4, "top_k": 1, "router": "plain",
               "router_config": {"normalize": True}}).check_router(registry)


def test_a_refused_router_is_refused_without_importing_torch():
    code = textwrap.dedent("""
        import sys
        from apt.plugins.builtin.moe import MoEPlugin
        for cfg in ({"top_k": 1}, {"top_k": 1, "router": "switch"}, {"router_config": {"normalize": False}}):
            try:
                MoEPlugin({"num_experts": 4, **cfg}).validate_config()
            except ValueError as exc:
                assert "combine weights that do not sum to 1" in str(exc), exc
            else:
                raise AssertionError(cfg)
        assert MoEPlugin({"num_experts": 4, "top_k": 1, "router_config": {"normalize": True}}).validate_config()
        print("TORCH", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TORCH False" in out.stdout, out.stdout + out.stderr


def test_jump_is_measured_in_eval_mode_on_one_batch():
    """Dropout would otherwise give the two passes different masks: noise 0 must measure 0."""
    model = tiny_model(dropout=0.5)
    plugin = _plugin()
    plugin.upcycle(model, _adamw(model))
    x, y = batch()
    state = torch.get_rng_state()
    assert plugin.measure_jump(model, x, y) == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    noisy = tiny_model(dropout=0.5)
    other = _plugin(noise=0.05)
    other.upcycle(noisy)
    assert other.measure_jump(noisy, x, y) != 0.0


def test_plugin_upcycles_at_its_first_epoch_and_follows_route_temp():
    model = tiny_model()
    opt = _adamw(model)
    trainer = RecordingTrainer(model, opt)
    sched = Schedule({"route_temp": {"start": 1.5, "end": 0.8, "by": "epoch"}}, max_epochs=4)
    plugin = _plugin()
    sched.epoch = 2
    plugin.on_epoch_begin(model=model, optimizer=opt, schedule=sched, epoch=2, trainer=trainer)
    routers = [b.ffn.router for b in model.blocks]
    assert [r.temperature for r in routers] == pytest.approx([1.5 - 0.7 / 3] * 2)
    assert model.state_dict()["blocks.0.ffn.router.temp"].item() == pytest.approx(1.5 - 0.7 / 3)
    x, y = batch()
    plugin.on_batch_begin(batch=(x, y), model=model)
    assert plugin.upcycle_loss_delta == pytest.approx(0.0, abs=1e-6)
    for _ in range(2):
        opt.zero_grad()
        loss = model(x, y)[1]
        plugin.on_batch_end(model=model, trainer=trainer)
        loss.backward()
        opt.step()
    plugin.on_epoch_end(trainer=trainer, epoch=2)
    m = trainer.metrics
    assert {"moe/dropped_frac", "moe/load_max", "moe/load_entropy", "moe/temperature",
            "moe/upcycle_loss_delta"} <= set(m)
    assert 0.0 < m["moe/load_entropy"] <= 1.0 and m["moe/dropped_frac"] == 0.0 and m["moe/load_max"] >= 1.0
    sched.epoch = 4
    plugin.on_epoch_begin(model=model, optimizer=opt, schedule=sched, epoch=4)
    assert [r.temperature for r in routers] == pytest.approx([0.8, 0.8])
    assert len([m for m in model.modules() if isinstance(m, MoELayer)]) == 2  # upcycled once


def test_checkpoint_after_upcycle_restores_the_moe_layout_and_temperature():
    model = tiny_model()
    opt = _adamw(model)
    plugin = _plugin(noise=0.05, temperature=0.7)
    plugin.on_epoch_begin(model=model, optimizer=opt, epoch=2)
    x, y = batch()
    model(x, y)[1].backward()
    opt.step()
    saved = {"model": model.state_dict(), "opt": opt.state_dict(), "moe": plugin.state_dict()}

    fresh = tiny_model(seed=1)
    fresh_opt = _adamw(fresh)
    resumed = _plugin(noise=0.05)
    resumed.load_state_dict(saved["moe"])
    resumed.on_checkpoint_load(model=fresh, optimizer=fresh_opt)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    torch.testing.assert_close(fresh(x)[0], model(x)[0])
    assert fresh.blocks[0].ffn.router.temperature == pytest.approx(0.7)
    resumed.on_epoch_begin(model=fresh, optimizer=fresh_opt, epoch=3)  # no second upcycle
    assert not isinstance(fresh.blocks[0].ffn.experts, MoELayer)


def test_checkpoint_before_upcycle_keeps_dense_and_mismatch_is_an_error():
    state = _plugin().state_dict()
    model = tiny_model()
    other = _plugin()
    other.load_state_dict(state)
    other.on_checkpoint_load(model=model, optimizer=None)
    assert not any(isinstance(m, MoELayer) for m in model.modules())
    with pytest.raises(ValueError, match="differs from this run's config"):
        _plugin(num_experts=8).load_state_dict(state)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"num_experts": 0}, "num_experts"),
        ({"top_k": 5}, "top_k must be"),
        ({"capacity_factor": 0}, "capacity_factor"),
        ({"noise": -1}, "noise"),
        ({"layers": "odd"}, "layers"),
        ({"capacity": 1.0}, "unknown option 'capacity'.*capacity_factor"),
    ],
)
def test_config_errors(cfg, needle):
    with pytest.raises(ValueError, match=needle):
        MoEPlugin({"num_experts": 4, **cfg}).validate_config()


def test_step_scheduled_plugin_upcycles_before_its_first_step():
    model = tiny_model()
    opt = _adamw(model)
    plugin = _plugin()
    x, y = batch()
    plugin.on_step_begin(model=model, optimizer=opt, step=7, epoch=1)
    assert plugin.upcycled and plugin.upcycled_at == {"epoch": 1, "step": 7}
    plugin.on_batch_begin(batch=(x, y), model=model)
    assert plugin.upcycle_loss_delta == pytest.approx(0.0, abs=1e-6) and plugin._dense == {}
