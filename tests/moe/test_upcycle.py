"""Sparse upcycling: the same function at the switch, determinism, optimizer hand-over."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apt.core.config import APTConfig
from apt.modeling import ModelBuilder
from apt.moe import MoELayer, TopKRouter, add_upcycled_params
from apt.moe.upcycle import combine_weights_sum_to_one, upcycle_model


def tiny_model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    dims = dict(d_model=32, num_heads=2, num_layers=2, vocab_size=64, max_seq_len=16)
    return ModelBuilder(APTConfig(**dims, **overrides)).build_model()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    return x, torch.roll(x, -1, dims=1)


def _router(d, e, k):
    return TopKRouter(d, e, top_k=k)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("ffn_name", ["mlp", "swiglu"])
def test_upcycled_model_equals_dense_when_noise_is_zero(mode, ffn_name):
    model = tiny_model(ffn_name=ffn_name, dropout=0.2)
    model.train(mode == "train")
    x, y = batch()
    torch.manual_seed(5)
    dense_logits, _ = model(x, y)
    upcycle_model(model, _router, num_experts=4, top_k=2, noise=0.0)
    assert all(isinstance(b.ffn, MoELayer) for b in model.blocks)
    torch.manual_seed(5)  # same dropout masks: the layer drops out its combined output, in token order
    moe_logits, _ = model(x, y)
    torch.testing.assert_close(moe_logits, dense_logits, atol=1e-5, rtol=1e-5)


def test_noise_breaks_symmetry_but_stays_close():
    model = tiny_model()
    x, y = batch()
    _, dense_loss = model(x, y)
    upcycle_model(model, _router, num_experts=4, top_k=2, noise=0.01, seed=3)
    experts = model.blocks[0].ffn.experts
    assert not torch.equal(experts[0].c_fc.weight, experts[1].c_fc.weight)
    _, moe_loss = model(x, y)
    assert abs((moe_loss - dense_loss).item()) < 0.01


def test_upcycle_is_deterministic_and_leaves_global_rng_alone():
    a, b = tiny_model(), tiny_model()
    state = torch.get_rng_state()
    upcycle_model(a, _router, num_experts=3, top_k=2, noise=0.1, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    upcycle_model(b, _router, num_experts=3, top_k=2, noise=0.1, seed=5)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb), na


def test_other_ffns_are_upcycled_too():
    model = tiny_model()
    for block in model.blocks:
        block.ffn = nn.Sequential(nn.Linear(32, 32), nn.GELU())
    x, _ = batch()
    model.eval()
    dense = model(x)[0]
    upcycle_model(model, _router, num_experts=2, top_k=2)
    assert isinstance(model.blocks[0].ffn.experts[1], nn.Sequential)
    torch.testing.assert_close(model(x)[0], dense, atol=1e-5, rtol=1e-5)


def _adamw(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-3)


def test_optimizer_takes_expert_params_with_copied_state():
    model = tiny_model(bias=True)
    opt = _adamw(model)
    x, y = batch()
    model(x, y)[1].backward()
    opt.step()
    dense_w = model.blocks[0].ffn.c_fc.weight
    dense_state = {k: v.clone() for k, v in opt.state[dense_w].items()}
    up = upcycle_model(model, _router, num_experts=2, top_k=2)
    assert add_upcycled_params(opt, up) == sum(map(len, up.replaced.values())) + len(up.routers)
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in model.parameters()}
    assert len(in_opt) == len(list(model.parameters()))
    assert dense_w not in opt.state
    e0, e1 = (e.c_fc.weight for e in model.blocks[0].ffn.experts)
    torch.testing.assert_close(opt.state[e0]["exp_avg"], dense_state["exp_avg"])
    assert opt.state[e0]["exp_avg"].data_ptr() != opt.state[e1]["exp_avg"].data_ptr()
    assert any(e0 is p for p in opt.param_groups[0]["params"])  # the dense weight's group
    gate = model.blocks[0].ffn.router.gate.weight
    assert any(gate is p for p in opt.param_groups[0]["params"])  # matrices: the decay group
    opt.zero_grad()
    model(x, y)[1].backward()
    opt.step()  # every parameter, new and old, trains
    assert gate in opt.state and int(opt.state[e0]["step"]) == 2


def test_combine_weights_check_tells_normalising_routers_apart():
    assert combine_weights_sum_to_one(TopKRouter(16, 4, top_k=2), 16) < 1e-6
    assert combine_weights_sum_to_one(TopKRouter(16, 4, top_k=1, normalize=True), 16) < 1e-6
    assert combine_weights_sum_to_one(TopKRouter(16, 4, top_k=1), 16) > 0.5  # ~1/E of the weight left
    assert combine_weights_sum_to_one(TopKRouter(16, 4, top_k=2, normalize=False), 16) > 0.3
