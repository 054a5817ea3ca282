"""Router providers: conformance kit, option checks, creation with the MoE layer's top_k."""

from __future__ import annotations

import pytest
import torch

from apt.providers.router import SwitchRouter, SwitchRouterProvider, TopKRouterProvider
from apt.testing import check_router_provider


@pytest.mark.parametrize("name", ["topk", "switch"])
def test_builtin_routers_pass_the_kit(name):
    check_router_provider(name)


def test_noisy_and_top3_routers_pass_the_kit():
    check_router_provider(TopKRouterProvider({"noise_std": 1.0}), top_k=3, num_experts=6)


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


def _router_configs():
    """Every built-in router configuration the ``moe`` plugin or provider can ask for (small E)."""
    for name in ("topk", "switch"):
        for num_experts in (1, 2, 3, 4, 8):
            for top_k in range(1, num_experts + 1) if name == "topk" else (1,):
                for options in ({}, {"normalize": True}, {"normalize": False}, {"normalize": None},
                                {"noise_std": 1.0, "temperature": 0.5}):
                    yield name, num_experts, top_k, options


def test_the_static_combine_weights_answer_agrees_with_a_built_router():
    """What the provider says without torch is what ``apt.moe.combine_weights_sum_to_one`` measures."""
    from apt.core.registry import registry
    from apt.moe import combine_weights_sum_to_one

    seen = set()
    for name, num_experts, top_k, options in _router_configs():
        provider = registry.get("router", name, options)
        for temperature in (0.5, 1.0, 2.0):  # what the moe plugin passes (its `temperature`)
            known = provider.combine_weights_sum_to_one(num_experts, top_k, temperature=temperature)
            torch.manual_seed(num_experts * 10 + top_k)
            router = provider.create_router(16, num_experts, top_k=top_k, temperature=temperature)
            err = combine_weights_sum_to_one(router, 16)
            assert known is (err <= 1e-5), (name, num_experts, top_k, options, temperature, err)
            assert known or err > 0.05, "a refused router should be far from summing to one"
            seen.add(known)
    assert seen == {True, False}


def test_the_static_answer_refuses_the_arguments_create_router_refuses():
    with pytest.raises(ValueError, match="switch router is top-1, got top_k=2"):
        SwitchRouterProvider({}).combine_weights_sum_to_one(4, 2)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        TopKRouterProvider({"noise_std": -1}).combine_weights_sum_to_one(4, 2)
    with pytest.raises(ValueError, match="unknown option"):
        TopKRouterProvider({"nope": 1}).combine_weights_sum_to_one(4, 2)


def test_a_subclass_that_builds_another_router_cannot_tell():
    class Wrapped(TopKRouterProvider):
        def create_router(self, d_model, num_experts, **kwargs):
            return super().create_router(d_model, num_experts, **kwargs)

    class Other(TopKRouterProvider):
        router = "my_package.routing:MyRouter"

    assert Wrapped({}).combine_weights_sum_to_one(4, 2) is None
    assert Other({}).combine_weights_sum_to_one(4, 2) is None
