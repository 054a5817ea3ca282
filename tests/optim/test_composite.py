"""CompositeOptimizer: several torch optimizers behind one optimizer's interface."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from apt.optim import CompositeOptimizer


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


def _route(p: torch.Tensor) -> str:
    return "muon" if p.ndim == 2 else "adam"


def _composite(net: nn.Module) -> CompositeOptimizer:
    mats = [p for p in net.parameters() if p.ndim == 2]
    vecs = [p for p in net.parameters() if p.ndim < 2]
    return CompositeOptimizer({"adam": torch.optim.AdamW(vecs, lr=1e-2, weight_decay=0.0),
                               "muon": torch.optim.Muon(mats, lr=0.02, weight_decay=0.0)}, _route)


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 6, generator=g), torch.randn(16, 4, generator=g)
    return ((net(x) - y) ** 2).mean()


def _train(net: nn.Module, opt, steps: range) -> None:
    for s in steps:
        _loss(net, s).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_steps_equal_the_separate_optimizers():
    a, b = _net(), _net()
    comp = _composite(a)
    adam = torch.optim.AdamW([p for p in b.parameters() if p.ndim < 2], lr=1e-2, weight_decay=0.0)
    muon = torch.optim.Muon([p for p in b.parameters() if p.ndim == 2], lr=0.02, weight_decay=0.0)
    for s in range(4):
        _loss(a, s).backward()
        comp.step()
        comp.zero_grad()
        _loss(b, s).backward()
        adam.step()
        muon.step()
        adam.zero_grad()
        muon.zero_grad()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert all(p.grad is None for p in a.parameters())


def test_param_groups_are_the_parts_groups_so_an_lr_schedule_reaches_every_part():
    net = _net()
    comp = _composite(net)
    assert [len(g["params"]) for g in comp.param_groups] == [2, 2]
    for g in comp.param_groups:
        g["lr"] = g["lr"] * 0.5
    assert comp.optimizers["adam"].param_groups[0]["lr"] == pytest.approx(5e-3)
    assert comp.optimizers["muon"].param_groups[0]["lr"] == pytest.approx(0.01)


def test_state_dict_round_trip_continues_exactly():
    net = _net()
    comp = _composite(net)
    _train(net, comp, range(3))
    saved_net, saved = copy.deepcopy(net.state_dict()), copy.deepcopy(comp.state_dict())
    assert list(saved["parts"]) == ["adam", "muon"]
    _train(net, comp, range(3, 6))
    net2 = _net(seed=1)
    net2.load_state_dict(saved_net)
    comp2 = _composite(net2)
    comp2.load_state_dict(saved)
    _train(net2, comp2, range(3, 6))
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_state_with_other_parts_is_refused():
    net = _net()
    comp = _composite(net)
    single = torch.optim.AdamW(net.parameters()).state_dict()
    with pytest.raises(ValueError, match=r"optimizer state has parts a single optimizer, this run's optimizer "
                                         r"has parts \['adam', 'muon'\]"):
        comp.load_state_dict(single)
    with pytest.raises(ValueError, match=r"parts \['adam'\]"):
        comp.load_state_dict({"parts": {"adam": comp.optimizers["adam"].state_dict()}})


def test_add_param_group_routes_each_parameter_to_its_part_with_the_groups_options():
    net = _net()
    comp = _composite(net)
    extra = nn.Linear(4, 3)
    comp.add_param_group({"params": list(extra.parameters()), "weight_decay": 0.0})
    adam, muon = comp.optimizers["adam"], comp.optimizers["muon"]
    assert adam.param_groups[-1]["params"] == [extra.bias]
    assert muon.param_groups[-1]["params"] == [extra.weight]
    assert muon.param_groups[-1]["lr"] == 0.02 and adam.param_groups[-1]["lr"] == 1e-2  # each part's default
    comp.add_param_group({"params": nn.Linear(2, 2).weight, "lr": 0.5})  # a bare tensor, as torch accepts
    assert muon.param_groups[-1]["lr"] == 0.5


def test_state_is_a_read_only_view_of_every_part():
    net = _net()
    comp = _composite(net)
    _train(net, comp, range(1))
    state = comp.state
    assert set(state) == set(net.parameters())
    assert "momentum_buffer" in state[net[0].weight] and "exp_avg" in state[net[0].bias]
    with pytest.raises(TypeError):
        state[net[0].weight] = {}  # type: ignore[index]


def test_a_route_to_a_missing_part_is_an_error():
    comp = CompositeOptimizer({"adam": torch.optim.AdamW(_net().parameters())}, lambda p: "nowhere")
    with pytest.raises(ValueError, match=r"route sent a parameter to 'nowhere'; parts: \['adam'\]"):
        comp.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
