"""MoELayer: dropless dispatch equals a per-token reference; capacity mode; eval is dropless."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from apt.modeling.auxiliary import collect_aux_losses
from apt.moe import MoELayer, RouterOutput, SwitchRouter, TopKRouter
from apt.providers.ffn import MLP


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
        return RouterOutput(self.indices, self.weights, probs, probs.log())


def linear_experts(n: int, dim: int = 4) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(dim, dim, bias=False) for _ in range(n)]


def test_dropless_output_is_the_weighted_sum_of_each_tokens_experts():
    torch.manual_seed(0)
    experts = [MLP(16, 32) for _ in range(4)]
    layer = MoELayer(experts, TopKRouter(16, 4, top_k=2), top_k=2)
    x = torch.randn(3, 7, 16)
    r = layer.router(x.reshape(-1, 16))
    expected = torch.stack([sum(w * experts[e](xt) for e, w in zip(ids.tolist(), ws, strict=True))
                            for xt, ids, ws in zip(x.reshape(-1, 16), r.indices, r.weights, strict=True)])
    torch.testing.assert_close(layer(x), expected.view(3, 7, 16), atol=1e-6, rtol=1e-5)
    assert layer.last_stats["moe_dropped_frac"].item() == 0.0


def test_capacity_drops_later_tokens_and_reports_the_fraction():
    experts = linear_experts(2)
    router = FixedRouter([[0]] * 8, [[1.0]] * 8, 2)
    moe = MoELayer(experts, router, top_k=1, capacity_factor=1.0)  # capacity ceil(8 * 1 / 2) = 4
    assert moe.capacity(8) == 4 and MoELayer(experts, router, top_k=1).capacity(8) is None
    x = torch.randn(8, 4)
    y = moe(x)
    torch.testing.assert_close(y[:4], experts[0](x[:4]))
    assert torch.equal(y[4:], torch.zeros(4, 4))  # dropped: the residual carries them
    assert moe.last_stats["moe_dropped_frac"].item() == pytest.approx(0.5)
    assert moe.last_stats["moe_load_max"].item() == pytest.approx(2.0)  # the router's wish, before dropping
    moe.eval()  # evaluation is always dropless
    torch.testing.assert_close(moe(x), experts[0](x))


def test_first_choices_are_served_before_second_choices():
    experts = linear_experts(2)
    indices = [[0, 1], [0, 1], [1, 0], [1, 0]]
    weights = [[0.7, 0.3], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1]]
    moe = MoELayer(experts, FixedRouter(indices, weights, 2), top_k=2, capacity_factor=0.5)  # capacity 2
    x = torch.randn(4, 4)
    first = torch.stack([experts[i[0]](x[t]) * weights[t][0] for t, i in enumerate(indices)])
    torch.testing.assert_close(moe(x), first)
    assert moe.last_stats["moe_dropped_frac"].item() == pytest.approx(0.5)
    moe.capacity_factor = None  # dropless: both choices, weighted
    both = torch.stack([sum(experts[e](x[t]) * w for e, w in zip(i, weights[t], strict=True))
                        for t, i in enumerate(indices)])
    torch.testing.assert_close(moe(x), both)


def test_shared_expert_is_added_to_routed_output():
    experts = linear_experts(3)
    shared = nn.Linear(4, 4, bias=False)
    moe = MoELayer(experts, FixedRouter([[2]] * 5, [[0.5]] * 5, 3), top_k=1, shared_expert=shared)
    x = torch.randn(5, 4)
    torch.testing.assert_close(moe(x), 0.5 * experts[2](x) + shared(x))


@pytest.mark.parametrize("router_cls", [SwitchRouter, TopKRouter])
def test_one_expert_top1_with_weight_one_equals_the_dense_ffn(router_cls):
    torch.manual_seed(0)
    dense = MLP(16, 32)
    moe = MoELayer([copy.deepcopy(dense)], router_cls(16, 1, top_k=1), top_k=1)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), dense(x), atol=1e-6, rtol=1e-5)


def test_router_losses_reach_the_collection_with_gradients():
    torch.manual_seed(0)
    moe = MoELayer([MLP(16, 24) for _ in range(4)], TopKRouter(16, 4, top_k=2), top_k=2)
    with collect_aux_losses() as aux:
        moe(torch.randn(2, 6, 16))
    assert set(aux) == {"balance", "z"} and all(v.requires_grad for v in aux.values())


def test_eval_forward_leaves_training_statistics_alone():
    torch.manual_seed(0)
    moe = MoELayer([MLP(8, 16) for _ in range(4)], TopKRouter(8, 4, top_k=2), top_k=2)
    moe(torch.randn(5, 8))
    stats = dict(moe.last_stats)
    moe.eval()
    moe(torch.randn(50, 8))
    assert moe.last_stats == stats


def test_layer_arguments_are_checked():
    experts = linear_experts(2)
    with pytest.raises(ValueError, match="top_k must be an integer in \\[1, 2\\]"):
        MoELayer(experts, TopKRouter(4, 2, top_k=2), top_k=3)
    with pytest.raises(ValueError, match="router picks top_k=2.*given top_k=1"):
        MoELayer(experts, TopKRouter(4, 2, top_k=2), top_k=1)
    with pytest.raises(ValueError, match="routes to 3 experts but 2 were given"):
        MoELayer(experts, TopKRouter(4, 3, top_k=1), top_k=1)
    with pytest.raises(ValueError, match="capacity_factor must be > 0 or None"):
        MoELayer(experts, TopKRouter(4, 2, top_k=1), top_k=1, capacity_factor=0)
    with pytest.raises(ValueError, match="at least one expert"):
        MoELayer([], TopKRouter(4, 2, top_k=1), top_k=1)
