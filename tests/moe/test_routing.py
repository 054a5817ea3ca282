"""Routers: the literature's loss conventions, temperature, noise, temperature in the state dict."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from apt.modeling.auxiliary import collect_aux_losses
from apt.moe.routing import SwitchRouter, TopKRouter, balance_loss, expert_counts, z_loss


def hf_mixtral_load_balancing_loss(gate_logits: torch.Tensor, num_experts: int, top_k: int) -> torch.Tensor:
    """HF transformers' ``load_balancing_loss_func`` (models/mixtral/modeling_mixtral.py,
    Apache-2.0), the ``attention_mask=None`` branch, transcribed for one layer's logits."""
    routing_weights = F.softmax(gate_logits, dim=-1)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = F.one_hot(selected_experts, num_experts)
    tokens_per_expert = torch.mean(expert_mask.float(), dim=0)
    router_prob_per_expert = torch.mean(routing_weights, dim=0)
    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts


@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 1), (4, 2), (8, 2), (6, 3)])
def test_balance_loss_equals_hf_mixtral_on_the_same_logits(num_experts, top_k):
    gen = torch.Generator().manual_seed(num_experts * 10 + top_k)
    logits = torch.randn(50, num_experts, generator=gen) * 2
    probs = F.softmax(logits, dim=-1)
    indices = probs.topk(top_k, dim=-1).indices
    expected = hf_mixtral_load_balancing_loss(logits, num_experts, top_k)
    torch.testing.assert_close(balance_loss(probs, indices, num_experts), expected)


def test_balance_loss_hand_computed_and_its_range():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    top1 = torch.tensor([[0], [0], [1], [2]])
    # f = (2/4, 1/4, 1/4); P = (1.6/4, 1.1/4, 1.3/4); E * sum f_i P_i (Switch, k = 1)
    assert balance_loss(probs, top1, 3).item() == pytest.approx(3 * (0.5 * 0.4 + 0.25 * 0.275 + 0.25 * 0.325))
    E, N = 4, 60
    uniform = torch.full((N, E), 1 / E)
    for k in (1, 2, 3):  # a uniform router with an even assignment scores k
        even = (torch.arange(N * k).remainder(E)).view(N, k)
        assert balance_loss(uniform, even, E).item() == pytest.approx(k)
    collapsed = torch.zeros(N, E)
    collapsed[:, 0] = 1.0
    assert balance_loss(collapsed, torch.zeros(N, 1, dtype=torch.long), E).item() == pytest.approx(E)


def test_expert_counts_counts_every_choice():
    idx = torch.tensor([[0, 2], [2, 1], [2, 0]])
    assert expert_counts(idx, 4).tolist() == [2, 1, 3, 0]


def _route(router, x):
    with collect_aux_losses() as aux:
        out = router(x)
    return out, aux


def test_router_adds_its_weighted_losses_under_the_names_balance_and_z():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, top_k=2, balance_coef=0.05, z_coef=0.002)
    out, aux = _route(router, torch.randn(10, 8))
    assert set(aux) == {"balance", "z"}
    torch.testing.assert_close(aux["balance"], 0.05 * balance_loss(out.probs, out.indices, 4))
    torch.testing.assert_close(aux["z"], 0.002 * z_loss(out.logits))
    _, none = _route(TopKRouter(8, 4, balance_coef=0.0, z_coef=0.0), torch.randn(10, 8))
    assert none == {}
    assert (router.balance_coef, router.z_coef) == (0.05, 0.002)
    assert (TopKRouter(8, 4).balance_coef, TopKRouter(8, 4).z_coef) == (0.01, 0.001)


def test_z_loss_formula():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (math.log(2) ** 2 + (2 + math.log(1 + math.exp(-1))) ** 2) / 2
    assert z_loss(logits).item() == pytest.approx(expected)


def test_z_loss_is_taken_on_the_raw_logits_whatever_the_temperature():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, temperature=2.5, z_coef=0.01, balance_coef=0.0)
    x = torch.randn(12, 8)
    out, aux = _route(router, x)
    raw = x @ router.gate.weight.t()
    torch.testing.assert_close(out.logits, raw)
    torch.testing.assert_close(aux["z"], 0.01 * z_loss(raw))


def test_temperature_divides_the_logits_before_the_softmax():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, top_k=1)
    x = torch.randn(5, 8)
    raw = x @ router.gate.weight.t()
    router.temperature = 2.0
    torch.testing.assert_close(router(x).probs, F.softmax(raw / 2.0, dim=-1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        router.temperature = 0.0


def test_noise_is_added_after_the_temperature_and_only_in_training():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, noise_std=0.5, temperature=4.0)
    x = torch.randn(32, 8)
    raw = x @ router.gate.weight.t()
    torch.manual_seed(1)
    eps = torch.randn(32, 4)
    torch.manual_seed(1)
    out = router(x)
    # the noise's size does not depend on the temperature: softmax(raw / T + std * eps)
    torch.testing.assert_close(out.probs, F.softmax(raw / 4.0 + 0.5 * eps, dim=-1))
    router.eval()
    torch.testing.assert_close(router(x).probs, F.softmax(raw / 4.0, dim=-1))


def test_with_noise_the_temperature_changes_which_experts_are_chosen():
    """Without noise the top-k of logits / T is the top-k of the logits; with noise it is not."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    choices = {}
    for noise in (0.0, 1.0):
        router = TopKRouter(8, 4, top_k=1, noise_std=noise)
        router.gate.weight.data = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
        for temp in (0.1, 10.0):
            router.temperature = temp
            torch.manual_seed(7)
            choices[noise, temp] = router(x).indices
    assert torch.equal(choices[0.0, 0.1], choices[0.0, 10.0])
    changed = (choices[1.0, 0.1] != choices[1.0, 10.0]).float().mean().item()
    assert changed > 0.2  # hot: the noise decides; cold: the logits do


def test_temperature_is_in_the_state_dict():
    a, b = TopKRouter(8, 4), TopKRouter(8, 4)
    a.temperature = 0.7
    b.load_state_dict(a.state_dict())
    assert b.temperature == pytest.approx(0.7)
    assert "temp" in a.state_dict()


def test_annealing_between_forward_and_backward_keeps_autograd_valid():
    router = TopKRouter(8, 4)
    x = torch.randn(6, 8, requires_grad=True)
    out = router(x)
    router.temperature = 0.5  # e.g. a schedule stepping before this micro-batch's backward
    out.weights.sum().backward()
    assert x.grad is not None


def test_topk_weights_renormalise_and_switch_uses_raw_probability():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    out = TopKRouter(16, 5, top_k=2)(x)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(8))
    top = out.probs.gather(1, out.indices)
    torch.testing.assert_close(out.weights, top / top.sum(-1, keepdim=True))
    sw = SwitchRouter(16, 5)(x)
    torch.testing.assert_close(sw.weights, sw.probs.max(-1, keepdim=True).values)
    assert torch.equal(sw.indices, sw.probs.argmax(-1, keepdim=True))


def test_logits_are_float32_under_bfloat16():
    router = TopKRouter(8, 4).to(torch.bfloat16)
    assert router(torch.randn(6, 8, dtype=torch.bfloat16)).logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = TopKRouter(8, 4)(torch.randn(6, 8))
    assert out.logits.dtype == torch.float32 and out.probs.dtype == torch.float32


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TopKRouter(8, 2, top_k=3), "top_k must be an integer in \\[1, num_experts=2\\], got 3"),
        (lambda: TopKRouter(8, 0), "num_experts must be a positive integer"),
        (lambda: TopKRouter(8, 4, temperature=0.0), "temperature must be > 0"),
        (lambda: SwitchRouter(8, 4, top_k=2), "switch router is top-1.*'topk'"),
    ],
)
def test_bad_router_arguments_fail_clearly(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_state_dict_without_the_temperature_still_loads():
    router = TopKRouter(8, 4, temperature=0.9)
    old = {k: v for k, v in TopKRouter(8, 4).state_dict().items() if k != "temp"}
    router.load_state_dict(old)
    assert router.temperature == pytest.approx(0.9)
