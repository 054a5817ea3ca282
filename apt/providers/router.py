"""Router providers: ``topk`` (the default) and ``switch`` (top-1).

The routers themselves, their conventions (balance loss over all k choices, z-loss on raw
logits, noise independent of the temperature) and their losses live in
:mod:`apt.moe.routing`; they are re-exported here under their historical names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from apt.core.provider import RouterProvider
from apt.moe.routing import (
    RouterOutput,
    SwitchRouter,
    TopKRouter,
    balance_loss,
    check_router_args,
    z_loss,
)
from apt.providers.options import DeclaredOptions

__all__ = [
    "RouterOutput",
    "SwitchRouter",
    "SwitchRouterProvider",
    "TopKRouter",
    "TopKRouterProvider",
    "balance_loss",
    "z_loss",
]


class TopKRouterProvider(DeclaredOptions, RouterProvider):
    """Softmax top-k router (options: top_k, temperature, noise_std, normalize, balance_coef, z_coef)."""

    name = "topk"
    router_cls: type[TopKRouter] = TopKRouter
    options: dict[str, Any] = {
        "top_k": 2, "temperature": 1.0, "noise_std": 0.0, "normalize": None,
        "balance_coef": 0.01, "z_coef": 0.001,
    }

    passthrough = ("num_experts",)  # read by ModelBuilder.build_router, not an option here

    def resolved_options(self, **overrides: Any) -> dict[str, Any]:
        """Options, then ``overrides`` that are not None (values the caller decides)."""
        return {**super().resolved_options(), **{k: v for k, v in overrides.items() if v is not None}}

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        opts = self.resolved_options(top_k=config.get("top_k"))
        num_experts = config.get("num_experts", max(opts["top_k"], 1))
        try:
            check_router_args(
                num_experts, opts["top_k"], opts["temperature"], opts["noise_std"],
                opts["balance_coef"], opts["z_coef"],
            )
            if self.router_cls is SwitchRouter and opts["top_k"] != 1:
                raise ValueError(f"the switch router is top-1, got top_k={opts['top_k']}")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name} router: {exc}") from exc
        return True

    def create_router(self, d_model: int, num_experts: int, **kwargs: Any) -> nn.Module:
        """A router module; keyword arguments (e.g. ``top_k`` from an MoE layer) override options."""
        opts = self.resolved_options(**{k: v for k, v in kwargs.items() if k in self.options})
        top_k = opts.pop("top_k")
        return self.router_cls(d_model, num_experts, top_k, **opts)


class SwitchRouterProvider(TopKRouterProvider):
    """Switch (top-1) router; the combine weight is the chosen expert's probability."""

    name = "switch"
    router_cls = SwitchRouter
    options = {**TopKRouterProvider.options, "top_k": 1, "normalize": False}
