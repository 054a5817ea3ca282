"""Routers: conformance kit, the balance and z losses on hand-computed examples, temperature, noise."""

from __future__ import annotations

import math

import pytest
import torch

from apt.providers.router import (
    SwitchRouter,
    SwitchRouterProvider,
    TopKRouter,
    TopKRouterProvider,
    balance_loss,
    z_loss,
)
from apt.testing import check_router_provider


@pytest.mark.parametrize("name", ["topk", "switch"])
def test_builtin_routers_pass_the_kit(name):
    check_router_provider(name)


def test_noisy_and_top3_routers_pass_the_kit():
    check_router_provider(TopKRouterProvider({"noise_std": 1.0}), top_k=3, num_experts=6)


def test_balance_loss_matches_hand_computed_example():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    indices = torch.tensor([[0], [0], [1], [2]])
    # f = (2/4, 1/4, 1/4); P = (1.6/4, 1.1/4, 1.3/4); E * sum f_i P_i
    expected = 3 * (0.5 * 0.4 + 0.25 * 0.275 + 0.25 * 0.325)
    assert balance_loss(probs, indices, 3).item() == pytest.approx(expected)
    router = TopKRouter(4, 3, top_k=1, balance_coef=0.05, z_coef=0.0)
    out = router(torch.randn(10, 4))
    assert set(out.aux_losses) == {"balance_loss"}
    assert out.aux_losses["balance_loss"].item() == pytest.approx(
        0.05 * balance_loss(out.probs, out.indices, 3).item())


def test_balance_loss_is_minimal_for_a_uniform_router():
    E, N = 4, 60
    uniform = torch.full((N, E), 1 / E)
    even = torch.arange(N).remainder(E).view(N, 1)
    assert balance_loss(uniform, even, E).item() == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # a router whose loads match its probabilities: E * sum p_i^2 >= 1
        counts = torch.bincount(torch.randint(0, E, (N,), generator=gen), minlength=E)
        probs = (counts.float() / N).expand(N, E)
        indices = torch.repeat_interleave(torch.arange(E), counts).view(N, 1)
        loss = balance_loss(probs, indices, E).item()
        assert loss == pytest.approx(E * (counts.float() / N).pow(2).sum().item())
        assert loss >= 1.0 - 1e-6
    collapsed = torch.zeros(N, E)
    collapsed[:, 0] = 1.0
    assert balance_loss(collapsed, torch.zeros(N, 1, dtype=torch.long), E).item() == pytest.approx(E)


def test_z_loss_formula_and_default_coefficients():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (math.log(2) ** 2 + (2 + math.log(1 + math.exp(-1))) ** 2) / 2
    assert z_loss(logits).item() == pytest.approx(expected)
    router = TopKRouter(4, 2)
    assert (router.balance_coef, router.z_coef) == (0.01, 0.001)
    out = router(torch.randn(6, 4))
    assert out.aux_losses["z_loss"].item() == pytest.approx(0.001 * z_loss(out.logits).item())


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


def test_temperature_is_settable_and_scales_logits():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, top_k=1)
    x = torch.randn(5, 8)
    base = router(x).logits
    router.temperature = 2.0
    torch.testing.assert_close(router(x).logits, base / 2)


def test_noise_only_in_training():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, noise_std=1.0)
    x = torch.randn(32, 8)
    assert not torch.equal(router(x).logits, router(x).logits)
    router.eval()
    torch.testing.assert_close(router(x).logits, x @ router.gate.weight.T)


def test_logits_are_float32_under_bfloat16():
    router = TopKRouter(8, 4).to(torch.bfloat16)
    x = torch.randn(6, 8, dtype=torch.bfloat16)
    assert router(x).logits.dtype == torch.float32
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


def test_router_providers_validate_and_create():
    with pytest.raises(ValueError, match="topk router: top_k must be.*num_experts=4.*got 5"):
        TopKRouterProvider({}).validate_config({"num_experts": 4, "top_k": 5})
    with pytest.raises(ValueError, match="unknown option.*'temp'.*'temperature'"):
        TopKRouterProvider({"temp": 2}).validate_config({})
    with pytest.raises(ValueError, match="switch router is top-1"):
        SwitchRouterProvider({}).validate_config({"num_experts": 4, "top_k": 2})
    router = TopKRouterProvider({"temperature": 0.5, "top_k": 1}).create_router(8, 3, top_k=2, z_coef=0.0)
    assert (router.top_k, router.temperature, router.z_coef, router.num_experts) == (2, 0.5, 0.0, 3)
    assert isinstance(SwitchRouterProvider({}).create_router(8, 3), SwitchRouter)
