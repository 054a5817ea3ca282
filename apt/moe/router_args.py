"""The routers' argument rules, without torch: what is valid and what it implies.

:class:`~apt.moe.routing.TopKRouter` and :class:`~apt.moe.routing.SwitchRouter` apply
these rules when they are built; the router providers (:mod:`apt.providers.router`) apply
the same ones when a config is checked, so ``python -m apt check`` and ``train.py --cfg
job`` refuse a bad router, or a router whose combine weights would not sum to one, without
importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_router_args", "check_top1", "resolved_normalize", "weights_sum_to_one"]


def check_router_args(
    num_experts: Any, top_k: Any, temperature: Any, noise_std: Any, balance_coef: Any, z_coef: Any
) -> None:
    """Raise ValueError naming the first bad router argument."""
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be an integer in [1, num_experts={num_experts}], got {top_k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    for name, value in (("noise_std", noise_std), ("balance_coef", balance_coef), ("z_coef", z_coef)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_top1(top_k: Any) -> None:
    """Raise ValueError unless ``top_k`` is 1: the switch router routes each token to one expert."""
    if top_k != 1:
        raise ValueError(f"the switch router is top-1, got top_k={top_k}; use the 'topk' router for top_k > 1")


def resolved_normalize(top_k: int, normalize: bool | None) -> bool:
    """Whether a top-k router rescales the chosen probabilities to sum to one.

    By default (``None``) only when ``top_k > 1``: with top-1 the weight would always be 1
    and the router would learn only from its auxiliary losses.
    """
    return top_k > 1 if normalize is None else bool(normalize)


def weights_sum_to_one(num_experts: int, top_k: int, normalize: bool | None) -> bool:
    """Whether a top-k router's combine weights sum to one per token, for any input.

    They do when the chosen probabilities are renormalised, or when every expert is chosen
    (the softmax over all experts sums to one). Otherwise they sum to less than one: an
    upcycled layer of identical experts would scale the dense FFN's output by that sum,
    about ``top_k / num_experts`` for a freshly initialised router.
    """
    return resolved_normalize(top_k, normalize) or top_k == num_experts
