"""MoE: conformance kit, dense equivalence, capacity and priority, upcycling, provider options."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from apt.core import APTConfig, Registry
from apt.modeling import ModelBuilder
from apt.providers.ffn import MLP, SwiGLU
from apt.providers.moe import MoELayer, MoEProvider
from apt.providers.router import RouterOutput, SwitchRouter, TopKRouter
from apt.testing import check_ffn_provider


class FixedRouter(nn.Module):
    """Routes by a given table so dispatch can be checked by hand."""

    def __init__(self, indices: list[list[int]], weights: list[list[float]], num_experts: int) -> None:
        super().__init__()
        self.indices = torch.tensor(indices)
        self.weights = torch.tensor(weights)
        self.num_experts = num_experts
        self.top_k = self.indices.size(1)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        probs = torch.full((x.size(0), self.num_experts), 1 / self.num_experts)
        return RouterOutput(self.indices, self.weights, probs, probs.log(), {})


def linear_experts(n: int, dim: int = 4) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(dim, dim, bias=False) for _ in range(n)]


@pytest.mark.parametrize(
    "options",
    [
        {"num_experts": 4, "top_k": 2, "capacity_factor": 4.0},
        {"num_experts": 4, "top_k": 2, "capacity_factor": 4.0, "shared_expert": True, "expert": "swiglu"},
        {"num_experts": 3, "top_k": 1, "capacity_factor": 4.0, "router": "switch"},
    ],
)
def test_moe_passes_the_kit(options):
    check_ffn_provider(MoEProvider(options))


def test_moe_that_drops_tokens_passes_the_kit_when_not_pointwise():
    check_ffn_provider(MoEProvider({"num_experts": 4, "top_k": 2, "capacity_factor": 0.5}), pointwise=False)


@pytest.mark.parametrize("router_cls", [SwitchRouter, TopKRouter])
def test_one_expert_top1_equals_the_dense_ffn(router_cls):
    torch.manual_seed(0)
    dense = MLP(16, 32)
    moe = MoELayer([copy.deepcopy(dense)], router_cls(16, 1, top_k=1), top_k=1, capacity_factor=1.0)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), dense(x), atol=0, rtol=0)
    assert moe.last_stats["moe_dropped_frac"].item() == 0.0


def test_capacity_drops_later_tokens_and_reports_the_fraction():
    experts = linear_experts(2)
    router = FixedRouter([[0]] * 8, [[1.0]] * 8, 2)
    moe = MoELayer(experts, router, top_k=1, capacity_factor=1.0)  # capacity ceil(8 * 1 / 2) = 4
    assert moe.capacity(8) == 4
    x = torch.randn(8, 4)
    y = moe(x)
    torch.testing.assert_close(y[:4], experts[0](x[:4]))
    assert torch.equal(y[4:], torch.zeros(4, 4))  # dropped: the residual carries them
    assert moe.last_stats["moe_dropped_frac"].item() == pytest.approx(0.5)
    assert moe.last_stats["moe_load_max"].item() == pytest.approx(2.0)


def test_first_choices_are_served_before_second_choices():
    experts = linear_experts(2)
    indices = [[0, 1], [0, 1], [1, 0], [1, 0]]
    weights = [[0.7, 0.3], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1]]
    moe = MoELayer(experts, FixedRouter(indices, weights, 2), top_k=2, capacity_factor=0.5)  # capacity 2
    x = torch.randn(4, 4)
    y = moe(x)
    first = torch.stack([experts[i[0]](x[t]) * weights[t][0] for t, i in enumerate(indices)])
    torch.testing.assert_close(y, first)
    assert moe.last_stats["moe_dropped_frac"].item() == pytest.approx(0.5)
    moe.capacity_factor = 1.0  # room for everything: both choices, weighted
    both = torch.stack([sum(experts[e](x[t]) * w for e, w in zip(i, weights[t], strict=True))
                        for t, i in enumerate(indices)])
    torch.testing.assert_close(moe(x), both)


def test_shared_expert_is_added_to_routed_output():
    experts = linear_experts(3)
    shared = nn.Linear(4, 4, bias=False)
    router = FixedRouter([[2]] * 5, [[0.5]] * 5, 3)
    moe = MoELayer(experts[:3], router, top_k=1, capacity_factor=3.0, shared_expert=shared)
    x = torch.randn(5, 4)
    torch.testing.assert_close(moe(x), 0.5 * experts[2](x) + shared(x))


def test_upcycling_copies_existing_ffns_and_reports_aux_losses():
    torch.manual_seed(0)
    dense = SwiGLU(16, 24)
    moe = MoELayer([copy.deepcopy(dense) for _ in range(4)], TopKRouter(16, 4, top_k=2), top_k=2)
    x = torch.randn(2, 6, 16)
    # identical experts with renormalised weights: the upcycled layer starts as the dense one
    torch.testing.assert_close(moe(x), dense(x), atol=1e-6, rtol=1e-5)
    assert set(moe.last_aux_losses) == {"balance_loss", "z_loss"}
    assert all(v.requires_grad for v in moe.last_aux_losses.values())


def test_layer_arguments_are_checked():
    experts = linear_experts(2)
    with pytest.raises(ValueError, match="top_k must be an integer in \\[1, 2\\]"):
        MoELayer(experts, TopKRouter(4, 2, top_k=2), top_k=3)
    with pytest.raises(ValueError, match="router picks top_k=2.*given top_k=1"):
        MoELayer(experts, TopKRouter(4, 2, top_k=2), top_k=1)
    with pytest.raises(ValueError, match="routes to 3 experts but 2 were given"):
        MoELayer(experts, TopKRouter(4, 3, top_k=1), top_k=1)
    with pytest.raises(ValueError, match="capacity_factor must be > 0"):
        MoELayer(experts, TopKRouter(4, 2, top_k=1), top_k=1, capacity_factor=0)
    with pytest.raises(ValueError, match="at least one expert"):
        MoELayer([], TopKRouter(4, 2, top_k=1), top_k=1)


def test_provider_builds_experts_router_and_options():
    layer = MoEProvider({"num_experts": 3, "top_k": 1, "expert": "swiglu", "expert_d_ff": 20, "shared_expert": True,
                         "balance_coef": 0.1, "router_config": {"temperature": 2.0}}).create_layer(16, 64, router_name="switch")
    assert isinstance(layer, MoELayer) and len(layer.experts) == 3 and isinstance(layer.shared_expert, SwiGLU)
    assert all(isinstance(e, SwiGLU) and e.c_proj.in_features == 20 for e in layer.experts)
    assert isinstance(layer.router, SwitchRouter)
    assert (layer.router.balance_coef, layer.router.z_coef, layer.router.temperature) == (0.1, 0.001, 2.0)


def test_provider_uses_the_given_registry():
    reg = Registry.with_builtins()
    reg.register("ffn", "tiny", "apt.providers.ffn:MLPProvider")
    cfg = APTConfig(d_model=16, num_heads=2, ffn_name="moe", ffn_config={"expert": "tiny", "num_experts": 2, "top_k": 1})
    layer = ModelBuilder(cfg, registry=reg).build_ffn()
    assert isinstance(layer.experts[0], MLP)
    with pytest.raises(Exception, match="unknown ffn provider 'tiny'"):
        ModelBuilder(cfg)  # the default registry does not know it


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_experts": 0}, "num_experts must be a positive integer"),
        ({"num_experts": 2, "top_k": 3}, "top_k=3 must be an integer in \\[1, num_experts=2\\]"),
        ({"capacity_factor": -1}, "capacity_factor must be > 0"),
        ({"expert": "moe"}, "expert cannot be 'moe'"),
        ({"expert": "mlp", "expert_config": {"activation": "nope"}}, "unknown activation 'nope'"),
        ({"router": "switch"}, "switch router is top-1"),
        ({"router_config": {"temperature": 0}}, "temperature must be > 0"),
        ({"experts": 4}, "unknown option.*'experts'.*'num_experts'"),
    ],
)
def test_provider_validate_config_fails_early(options, match):
    with pytest.raises(ValueError, match=match):
        MoEProvider(options).validate_config({"d_model": 16, "d_ff": 64})
