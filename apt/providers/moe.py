"""Mixture-of-experts FFN: the ``moe`` provider and :class:`MoELayer`.

Dispatch is token-choice top-k with a capacity per expert of
``ceil(capacity_factor * N * top_k / E)`` assignments for ``N`` tokens. Assignments are
served in priority order: every token's first choice before any second choice, then by
position (GShard/Switch). Assignments beyond capacity are dropped: that token gets no
output from that expert (the residual stream carries it through), and the dropped fraction
is reported in :attr:`MoELayer.last_stats`. Because tokens of a batch compete for capacity,
a layer that drops tokens is not strictly position-wise; with enough capacity it is.

``MoELayer`` takes ready-made expert modules, so a dense FFN can be upcycled by copying it::

    MoELayer([copy.deepcopy(ffn) for _ in range(8)], TopKRouter(d_model, 8, top_k=2), top_k=2)

The provider builds experts with another FFN provider (option ``expert``, default ``mlp``)
and the router with a router provider: option ``router``, else ``APTConfig.router_name``,
else the registry default. ``ModelBuilder`` passes ``registry=``, ``router_name=`` and
``router_config=`` (``APTConfig.router_config``, updated by this provider's own
``router_config`` option) to :meth:`MoEProvider.create_layer` and to ``validate_config``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apt.core.provider import FFNProvider
from apt.core.registry import Registry
from apt.modeling.selection import call_provider
from apt.providers.options import DeclaredOptions

__all__ = ["MoELayer", "MoEProvider"]


class MoELayer(nn.Module):
    """Route each token to ``top_k`` of ``experts`` and sum their weighted outputs.

    ``router(x)`` must return an object with ``indices`` (N, k), ``weights`` (N, k),
    ``probs`` (N, E) and ``aux_losses`` (dict of scalar tensors), like
    :class:`apt.providers.router.RouterOutput`. After each forward, ``last_aux_losses`` holds
    the router's weighted losses and ``last_stats`` detached tensors: ``moe_dropped_frac``,
    ``moe_load_max`` (busiest expert's share of assignments times E; 1.0 is perfect
    balance) and ``router_entropy``. :class:`~apt.modeling.TransformerLM` collects both.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        router: nn.Module,
        top_k: int,
        capacity_factor: float = 1.25,
        shared_expert: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not experts:
            raise ValueError("MoELayer needs at least one expert")
        if not isinstance(top_k, int) or not 1 <= top_k <= len(experts):
            raise ValueError(f"top_k must be an integer in [1, {len(experts)}] (the number of experts), got {top_k!r}")
        if not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0, got {capacity_factor!r}")
        router_k = getattr(router, "top_k", top_k)
        if router_k != top_k:
            raise ValueError(f"the router picks top_k={router_k} experts but the MoE layer was given top_k={top_k}")
        router_e = getattr(router, "num_experts", len(experts))
        if router_e != len(experts):
            raise ValueError(f"the router routes to {router_e} experts but {len(experts)} were given")
        self.experts = nn.ModuleList(experts)
        self.router = router
        self.top_k = top_k
        self.capacity_factor = float(capacity_factor)
        self.shared_expert = shared_expert
        self.last_aux_losses: dict[str, torch.Tensor] = {}
        self.last_stats: dict[str, torch.Tensor] = {}

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def capacity(self, num_tokens: int) -> int:
        """Assignments each expert accepts for a batch of ``num_tokens`` tokens."""
        return max(1, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])  # (N, C)
        N, E, k = xf.size(0), self.num_experts, self.top_k
        r = self.router(xf)
        # Slot-major order: all first choices, then all second choices, ... (priority order).
        flat_expert = r.indices.t().reshape(-1)  # (k*N,)
        flat_token = torch.arange(N, device=x.device).repeat(k)  # (k*N,)
        flat_weight = r.weights.t().reshape(-1)  # (k*N,)
        onehot = F.one_hot(flat_expert, E)  # (k*N, E)
        position = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1  # slot within its expert
        keep = position < self.capacity(N)
        kept = keep.nonzero().squeeze(1)
        expert_of = flat_expert[kept]
        order = torch.argsort(expert_of, stable=True)
        tokens, weights = flat_token[kept][order], flat_weight[kept][order]
        counts = torch.bincount(expert_of, minlength=E).tolist()  # one host sync per layer
        out = torch.zeros_like(xf)
        start = 0
        for expert, n in zip(self.experts, counts, strict=True):
            if n:
                idx = tokens[start : start + n]
                y = expert(xf[idx]) * weights[start : start + n, None].to(xf.dtype)  # (n, C)
                out.index_add_(0, idx, y)
                start += n
        if self.shared_expert is not None:
            out = out + self.shared_expert(xf)
        self.last_aux_losses = r.aux_losses
        with torch.no_grad():
            load = onehot.sum(dim=0).float()  # (E,) assignments before dropping
            probs = r.probs.float()
            self.last_stats = {
                "moe_dropped_frac": 1.0 - keep.float().mean(),
                "moe_load_max": load.max() * E / flat_expert.numel(),
                "router_entropy": -(probs * probs.clamp_min(1e-9).log()).sum(-1).mean(),
            }
        return out.view(shape)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, top_k={self.top_k}, capacity_factor={self.capacity_factor}"


class MoEProvider(DeclaredOptions, FFNProvider):
    """Mixture of experts built from another FFN provider and a router provider."""

    name = "moe"
    #: ModelBuilder puts a router into the provider selection when this is set.
    uses_router = True
    options: dict[str, Any] = {
        "num_experts": 8, "top_k": 2, "capacity_factor": 1.25, "expert": "mlp", "expert_config": {},
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
        if not isinstance(o["capacity_factor"], int | float) or not o["capacity_factor"] > 0:
            raise ValueError(f"moe ffn: capacity_factor must be > 0, got {o['capacity_factor']!r}")
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
        n_made = o["num_experts"] + (1 if o["shared_expert"] else 0)
        made = [
            call_provider(expert_provider.create_layer, d_model, expert_d_ff, dropout, bias=bias,
                          owner=f"moe expert provider {o['expert']!r}")
            for _ in range(n_made)
        ]
        router_provider = reg.get("router", o["router"] or router_name, {**(router_config or {}), **o["router_config"]})
        coefs = {key: o[key] for key in ("balance_coef", "z_coef") if o[key] is not None}
        router = call_provider(router_provider.create_router, d_model, o["num_experts"], top_k=o["top_k"],
                               owner="moe router provider", **coefs)
        shared = made.pop() if o["shared_expert"] else None
        return MoELayer(made, router, o["top_k"], o["capacity_factor"], shared_expert=shared)


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from apt.core.registry import registry as default_registry

    return default_registry
