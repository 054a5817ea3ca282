"""Router providers: ``topk`` (the default) and ``switch`` (top-1).

The routers themselves, their conventions (balance loss over all k choices, z-loss on raw
logits, noise independent of the temperature) and their losses live in
:mod:`apt.moe.routing`; they are reachable here too under their historical names, imported
on first access. The providers import no torch: their option checks and whether their
combine weights sum to one follow from the rules of :mod:`apt.moe.router_args`, so a
config is checked without building a router.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from apt.core.lazy import lazy_attributes
from apt.core.provider import RouterProvider
from apt.moe.router_args import check_router_args, check_top1, weights_sum_to_one
from apt.providers.options import DeclaredOptions

if TYPE_CHECKING:
    from torch import nn

# RouterOutput, TopKRouter, SwitchRouter, balance_loss and z_loss are reachable here too,
# lazily (__getattr__).
__all__ = ["SwitchRouterProvider", "TopKRouterProvider"]

_ROUTING = "apt.moe.routing"
_TOPK, _SWITCH = f"{_ROUTING}:TopKRouter", f"{_ROUTING}:SwitchRouter"


__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ("RouterOutput", "SwitchRouter", "TopKRouter", "balance_loss", "z_loss"), _ROUTING))


class TopKRouterProvider(DeclaredOptions, RouterProvider):
    """Softmax top-k router (options: top_k, temperature, noise_std, normalize, balance_coef, z_coef)."""

    name = "topk"
    #: ``"module:Class"`` of the router :meth:`create_router` builds.
    router: ClassVar[str] = _TOPK
    options: dict[str, Any] = {
        "top_k": 2, "temperature": 1.0, "noise_std": 0.0, "normalize": None,
        "balance_coef": 0.01, "z_coef": 0.001,
    }

    passthrough = ("num_experts",)  # read by ModelBuilder.build_router, not an option here

    def resolved_options(self, **overrides: Any) -> dict[str, Any]:
        """Options, then ``overrides`` that are not None (values the caller decides)."""
        return {**super().resolved_options(), **{k: v for k, v in overrides.items() if v is not None}}

    def router_options(self, num_experts: int, **overrides: Any) -> dict[str, Any]:
        """The router's arguments (options, then ``overrides`` that are not None), checked as
        the router checks them when it is built: ValueError names the first bad one."""
        opts = self.resolved_options(**overrides)
        if self.router == _SWITCH:
            check_top1(opts["top_k"])
        check_router_args(num_experts, opts["top_k"], opts["temperature"], opts["noise_std"],
                          opts["balance_coef"], opts["z_coef"])
        return opts

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        top_k = self.resolved_options(top_k=config.get("top_k"))["top_k"]
        try:
            self.router_options(config.get("num_experts", max(top_k, 1)), top_k=top_k)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name} router: {exc}") from exc
        return True

    def combine_weights_sum_to_one(self, num_experts: int, top_k: int, **kwargs: Any) -> bool | None:
        """From the options (:func:`apt.moe.router_args.weights_sum_to_one`) for the built-in
        routers; None for a subclass that builds another router."""
        if self.router not in (_TOPK, _SWITCH) or type(self).create_router is not TopKRouterProvider.create_router:
            return None
        opts = self.router_options(num_experts, top_k=top_k, **self._overrides(kwargs))
        return weights_sum_to_one(num_experts, opts["top_k"], opts["normalize"])

    def create_router(self, d_model: int, num_experts: int, **kwargs: Any) -> nn.Module:
        """A router module; keyword arguments (e.g. ``top_k`` from an MoE layer) override options."""
        opts = self.router_options(num_experts, **self._overrides(kwargs))
        top_k = opts.pop("top_k")
        module, _, cls_name = self.router.partition(":")
        return getattr(importlib.import_module(module), cls_name)(d_model, num_experts, top_k, **opts)

    def _overrides(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in kwargs.items() if k in self.options}


class SwitchRouterProvider(TopKRouterProvider):
    """Switch (top-1) router; the combine weight is the chosen expert's probability."""

    name = "switch"
    router = _SWITCH
    options = {**TopKRouterProvider.options, "top_k": 1, "normalize": False}
