"""The ``moe`` FFN provider: a mixture of experts built from another FFN provider and a router.

The layer and its dispatch live in :mod:`apt.moe` (``MoELayer`` is reachable here too); the
provider imports them, and torch, on the first ``create_layer``, so checking a config does
not. Routing is dropless unless ``capacity_factor`` is set (see :mod:`apt.moe.layer`:
capacity limits make training non-causal across the batch). Experts come from the FFN
provider named by option ``expert`` (default ``mlp``), built without dropout: the layer
applies ``dropout`` to its combined output, in token order, which keeps the layer
position-wise. The router comes from a router provider: option ``router``, else
``APTConfig.router_name``, else the registry default. ``ModelBuilder`` passes
``registry=``, ``router_name=`` and ``router_config=`` (``APTConfig.router_config``,
updated by this provider's own ``router_config`` option) to
:meth:`MoEProvider.create_layer` and to ``validate_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apt.core.lazy import lazy_attributes
from apt.core.provider import FFNProvider
from apt.core.registry import Registry
from apt.modeling.selection import call_provider
from apt.providers.options import DeclaredOptions

if TYPE_CHECKING:
    from torch import nn

# MoELayer is reachable here too, lazily (__getattr__).
__all__ = ["MoEProvider"]


__getattr__ = lazy_attributes(__name__, {"MoELayer": "apt.moe.layer"})


class MoEProvider(DeclaredOptions, FFNProvider):
    """Mixture of experts built from another FFN provider and a router provider."""

    name = "moe"
    #: ModelBuilder puts a router into the provider selection when this is set.
    uses_router = True
    options: dict[str, Any] = {
        "num_experts": 8, "top_k": 2, "capacity_factor": None, "expert": "mlp", "expert_config": {},
        "expert_d_ff": None, "router": None, "router_config": {}, "shared_expert": False,
        "balance_coef": None, "z_coef": None,
    }

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        """Checks the options, then the expert and router providers with their own configs."""
        o = self.resolved_options()
        E, k = o["num_experts"], o["top_k"]
        if not isinstance(E, int) or E < 1:
            raise ValueError(f"moe ffn: num_experts must be a positive integer, got {E!r}")
        if not isinstance(k, int) or not 1 <= k <= E:
            raise ValueError(f"moe ffn: top_k={k!r} must be an integer in [1, num_experts={E}]")
        cf = o["capacity_factor"]
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, int | float) or not cf > 0):
            raise ValueError(f"moe ffn: capacity_factor must be a number > 0 or null (dropless), got {cf!r}")
        if o["expert"] == self.name:
            raise ValueError("moe ffn: expert cannot be 'moe' itself; choose a dense FFN provider such as 'mlp'")
        reg = _registry(config.get("registry"))
        dims = {key: v for key, v in config.items() if key not in ("registry", "router_name", "router_config")}
        expert = reg.get("ffn", o["expert"], o["expert_config"])
        expert_dims = {**dims, "d_ff": o["expert_d_ff"] or dims.get("d_ff"), **o["expert_config"]}
        if expert.validate_config(expert_dims) is False:
            raise ValueError(f"moe ffn: expert provider {o['expert']!r} rejected its config")
        router_name = o["router"] or config.get("router_name")
        router_config = {**(config.get("router_config") or {}), **o["router_config"]}
        router = reg.get("router", router_name, router_config)
        router_dims = {**dims, **router_config, "num_experts": E, "top_k": k}
        if router.validate_config(router_dims) is False:
            raise ValueError(f"moe ffn: router provider {reg.resolve_name('router', router_name)!r} rejected its config")
        return True

    def create_layer(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        *,
        bias: bool = False,
        registry: Registry | None = None,
        router_name: str | None = None,
        router_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        o = self.resolved_options()
        reg = _registry(registry)
        expert_provider = reg.get("ffn", o["expert"], o["expert_config"])
        expert_d_ff = o["expert_d_ff"] or d_ff

        def make_expert(p: float = 0.0) -> nn.Module:
            return call_provider(expert_provider.create_layer, d_model, expert_d_ff, p, bias=bias,
                                 owner=f"moe expert provider {o['expert']!r}")

        experts = [make_expert() for _ in range(o["num_experts"])]  # dropout: the layer's, in token order
        shared = make_expert(dropout) if o["shared_expert"] else None
        router_provider = reg.get("router", o["router"] or router_name, {**(router_config or {}), **o["router_config"]})
        coefs = {key: o[key] for key in ("balance_coef", "z_coef") if o[key] is not None}
        router = call_provider(router_provider.create_router, d_model, o["num_experts"], top_k=o["top_k"],
                               owner="moe router provider", **coefs)
        from apt.moe.layer import MoELayer

        return MoELayer(experts, router, o["top_k"], o["capacity_factor"], shared_expert=shared, dropout=dropout)


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from apt.core.registry import registry as default_registry

    return default_registry
