"""Router providers: conformance kit, option checks, creation with the MoE layer's top_k."""

from __future__ import annotations

import pytest

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
