"""moe plugin: exact upcycling, optimizer hand-over, temperature, metrics, layout on resume."""

from __future__ import annotations

import pytest
import torch

from apt.plugins.builtin.moe import MoEPlugin, add_upcycled_params, upcycle_model
from apt.providers.moe import MoELayer
from apt.providers.router import TopKRouter
from apt.schedule import Schedule

from ._helpers import RecordingTrainer, batch, tiny_model


def _router(d, e, k):
    return TopKRouter(d, e, top_k=k)


def test_upcycled_model_equals_dense_when_noise_is_zero():
    model = tiny_model()
    x, y = batch()
    dense_logits, dense_loss = model(x, y)
    upcycle_model(model, _router, num_experts=4, top_k=2, capacity_factor=8.0, noise=0.0)
    assert all(isinstance(b.ffn, MoELayer) for b in model.blocks)
    moe_logits, moe_loss = model(x, y)
    torch.testing.assert_close(moe_logits, dense_logits, atol=1e-5, rtol=1e-5)
    assert float(model.metrics()["moe_dropped_frac"]) == 0.0


def test_noise_breaks_symmetry_but_stays_close():
    model = tiny_model()
    x, y = batch()
    _, dense_loss = model(x, y)
    upcycle_model(model, _router, num_experts=4, top_k=2, capacity_factor=8.0, noise=0.01, seed=3)
    experts = model.blocks[0].ffn.experts
    assert not torch.equal(experts[0].c_fc.weight, experts[1].c_fc.weight)
    _, moe_loss = model(x, y)
    assert abs((moe_loss - dense_loss).item()) < 0.01


def test_upcycle_is_deterministic_and_leaves_global_rng_alone():
    a, b = tiny_model(), tiny_model()
    state = torch.get_rng_state()
    upcycle_model(a, _router, num_experts=3, top_k=2, capacity_factor=1.0, noise=0.1, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    upcycle_model(b, _router, num_experts=3, top_k=2, capacity_factor=1.0, noise=0.1, seed=5)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb), na


def _adamw(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )


def test_optimizer_takes_expert_params_with_copied_state():
    model = tiny_model()
    opt = _adamw(model)
    x, y = batch()
    model(x, y)[1].backward()
    opt.step()
    dense_w = model.blocks[0].ffn.c_fc.weight
    dense_state = {k: v.clone() for k, v in opt.state[dense_w].items()}
    up = upcycle_model(model, _router, num_experts=2, top_k=2, capacity_factor=4.0)
    add_upcycled_params(opt, up)
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in model.parameters()}
    assert len(in_opt) == len(list(model.parameters()))
    assert dense_w not in opt.state
    e0, e1 = (e.c_fc.weight for e in model.blocks[0].ffn.experts)
    torch.testing.assert_close(opt.state[e0]["exp_avg"], dense_state["exp_avg"])
    assert opt.state[e0]["exp_avg"].data_ptr() != opt.state[e1]["exp_avg"].data_ptr()
    gate = model.blocks[0].ffn.router.gate.weight
    assert any(gate is p for p in opt.param_groups[0]["params"])  # matrices: the decay group
    opt.zero_grad()
    model(x, y)[1].backward()
    opt.step()  # every parameter, new and old, trains
    assert gate in opt.state and int(opt.state[e0]["step"]) == 2


def _plugin(**cfg):
    p = MoEPlugin({"num_experts": 4, "top_k": 2, "capacity_factor": 8.0, "noise": 0.0, **cfg})
    assert p.validate_config()
    return p


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
    x, y = batch()
    plugin.on_batch_begin(batch=(x, y), model=model)
    assert plugin.upcycle_loss_delta == pytest.approx(0.0, abs=1e-5)
    for _ in range(2):
        opt.zero_grad()
        loss = model(x, y)[1] + sum(model.aux_losses().values())
        plugin.on_batch_end(model=model, trainer=trainer)
        loss.backward()
        opt.step()
    plugin.on_epoch_end(trainer=trainer, epoch=2)
    m = trainer.metrics
    assert {
        "moe/balance_loss",
        "moe/z_loss",
        "moe/dropped_frac",
        "moe/load_entropy",
        "moe/temperature",
    } <= set(m)
    assert 0.0 < m["moe/load_entropy"] <= 1.0
    assert m["moe/dropped_frac"] == 0.0
    assert m["moe/balance_loss"] >= 0.01 * 0.99  # coef * E * sum f P >= coef (near uniform)
    sched.epoch = 4
    plugin.on_epoch_begin(model=model, optimizer=opt, schedule=sched, epoch=4)
    assert [r.temperature for r in routers] == pytest.approx([0.8, 0.8])
    assert len([m for m in model.modules() if isinstance(m, MoELayer)]) == 2  # upcycled once


def test_checkpoint_after_upcycle_restores_the_moe_layout():
    model = tiny_model()
    opt = _adamw(model)
    plugin = _plugin(noise=0.05)
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
    resumed.on_epoch_begin(model=fresh, optimizer=fresh_opt, epoch=3)  # no second upcycle
    assert isinstance(fresh.blocks[0].ffn.experts[0], torch.nn.Module)
    assert not isinstance(fresh.blocks[0].ffn.experts[0], MoELayer)


def test_checkpoint_before_upcycle_keeps_dense_and_mismatch_is_an_error():
    plugin = _plugin()
    state = plugin.state_dict()
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
    assert plugin.upcycle_loss_delta == pytest.approx(0.0, abs=1e-5) and plugin._dense == {}
