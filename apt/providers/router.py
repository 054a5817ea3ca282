"""Token-to-expert routers: ``topk`` (the default) and ``switch`` (top-1).

A router maps tokens ``(N, C)`` to a :class:`RouterOutput`: the chosen experts, their
combine weights, the full probabilities and its auxiliary losses, already multiplied by
their coefficients:

- ``balance_loss = balance_coef * E * sum_i f_i * P_i`` (Switch Transformer), where ``f_i``
  is the fraction of routing assignments sent to expert ``i`` and ``P_i`` the mean router
  probability of expert ``i``. It equals ``balance_coef`` for a uniform router, the minimum
  of ``E * sum_i p_i^2`` when loads match probabilities, and ``E * balance_coef`` when every
  token goes to one expert.
- ``z_loss = z_coef * mean(logsumexp(logits)^2)`` (ST-MoE), which keeps logits small.

Logits are computed in float32 even under autocast or with bfloat16 weights: the softmax
over experts is where low precision hurts most. ``temperature`` is a plain attribute so a
schedule or plugin can anneal it during training; ``noise_std > 0`` adds Gaussian noise to
the logits in training mode only (noisy gating).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from apt.core.provider import RouterProvider
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


class RouterOutput(NamedTuple):
    indices: torch.Tensor  # (N, k) int64 expert ids, best first
    weights: torch.Tensor  # (N, k) float32 combine weights
    probs: torch.Tensor  # (N, E) float32 softmax over experts
    logits: torch.Tensor  # (N, E) float32, after temperature
    aux_losses: dict[str, torch.Tensor]  # weighted scalar losses


def balance_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Unweighted Switch load-balancing loss ``E * sum_i f_i * P_i`` (1.0 when uniform)."""
    f = torch.bincount(indices.reshape(-1), minlength=num_experts).to(probs.dtype) / indices.numel()  # (E,)
    p = probs.mean(dim=0)  # (E,)
    return num_experts * (f * p).sum()


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Unweighted ST-MoE router z-loss ``mean(logsumexp(logits)^2)``."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


class TopKRouter(nn.Module):
    """Softmax router choosing ``top_k`` experts per token.

    ``normalize`` rescales the chosen probabilities to sum to one; by default only when
    ``top_k > 1`` (with top-1 the weight would always be 1 and the router would learn only
    from its auxiliary losses).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int = 2,
        *,
        temperature: float = 1.0,
        noise_std: float = 0.0,
        normalize: bool | None = None,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
    ) -> None:
        super().__init__()
        _check_router_args(num_experts, top_k, temperature, noise_std, balance_coef, z_coef)
        self.num_experts = num_experts
        self.top_k = top_k
        self.temperature = float(temperature)
        self.noise_std = float(noise_std)
        self.normalize = top_k > 1 if normalize is None else bool(normalize)
        self.balance_coef = float(balance_coef)
        self.z_coef = float(z_coef)
        self.gate = nn.Linear(d_model, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        """Route tokens ``x`` of shape (N, C) (leading dims are flattened)."""
        x = x.reshape(-1, x.size(-1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.gate.weight.float())  # (N, E)
            if self.training and self.noise_std > 0:
                logits = logits + torch.randn_like(logits) * self.noise_std
            if self.temperature != 1.0:
                logits = logits / self.temperature
            probs = F.softmax(logits, dim=-1)
            weights, indices = probs.topk(self.top_k, dim=-1)  # (N, k)
            if self.normalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            aux: dict[str, torch.Tensor] = {}
            if self.balance_coef:
                aux["balance_loss"] = self.balance_coef * balance_loss(probs, indices, self.num_experts)
            if self.z_coef:
                aux["z_loss"] = self.z_coef * z_loss(logits)
        return RouterOutput(indices, weights, probs, logits, aux)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, top_k={self.top_k}, temperature={self.temperature}, noise_std={self.noise_std}"


class SwitchRouter(TopKRouter):
    """Switch Transformer routing: top-1, combine weight = the chosen expert's probability."""

    def __init__(self, d_model: int, num_experts: int, top_k: int = 1, **kwargs: Any) -> None:
        if top_k != 1:
            raise ValueError(f"the switch router is top-1, got top_k={top_k}; use the 'topk' router for top_k > 1")
        kwargs.setdefault("normalize", False)
        super().__init__(d_model, num_experts, 1, **kwargs)


def _check_router_args(
    num_experts: Any, top_k: Any, temperature: Any, noise_std: Any, balance_coef: Any, z_coef: Any
) -> None:
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be an integer in [1, num_experts={num_experts}], got {top_k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    for name, value in (("noise_std", noise_std), ("balance_coef", balance_coef), ("z_coef", z_coef)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


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
            _check_router_args(
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
