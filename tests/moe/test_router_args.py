"""The routers' argument rules: one copy, used by the routers and (without torch) by the providers."""

from __future__ import annotations

import pytest

from apt.moe import SwitchRouter, TopKRouter
from apt.moe.router_args import (
    check_router_args,
    check_top1,
    resolved_normalize,
    weights_sum_to_one,
)

GOOD = {"num_experts": 4, "top_k": 2, "temperature": 1.0, "noise_std": 0.0, "balance_coef": 0.01, "z_coef": 0.0}


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"num_experts": 0}, "num_experts must be a positive integer, got 0"),
        ({"num_experts": 2.0}, "num_experts must be a positive integer, got 2.0"),
        ({"top_k": 5}, "top_k must be an integer in \\[1, num_experts=4\\], got 5"),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
        ({"z_coef": float("nan")}, "z_coef must be >= 0, got nan"),
    ],
)
def test_the_first_bad_argument_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        check_router_args(**{**GOOD, **bad})
    with pytest.raises(ValueError, match=match):  # the router applies the same rule
        TopKRouter(8, **{**GOOD, **bad})


def test_switch_is_top1():
    check_top1(1)
    with pytest.raises(ValueError, match="switch router is top-1, got top_k=2; use the 'topk' router"):
        check_top1(2)
    with pytest.raises(ValueError, match="switch router is top-1, got top_k=2; use the 'topk' router"):
        SwitchRouter(8, 4, top_k=2)


def test_normalize_defaults_to_top_k_above_one_and_weights_sum_to_one_when_renormalised_or_all_chosen():
    assert [resolved_normalize(k, None) for k in (1, 2)] == [False, True]
    assert resolved_normalize(1, True) and not resolved_normalize(3, False)
    assert weights_sum_to_one(4, 2, None) and weights_sum_to_one(4, 1, True)
    assert not weights_sum_to_one(4, 1, None) and not weights_sum_to_one(4, 3, False)
    assert weights_sum_to_one(1, 1, None) and weights_sum_to_one(3, 3, False)  # every expert chosen
