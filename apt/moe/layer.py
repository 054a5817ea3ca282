"""The mixture-of-experts FFN layer: route, dispatch to experts, combine.

Dispatch (every mode): the token-expert assignments are sorted by expert, the token rows
gathered once into that order, each expert run on its contiguous slice (or one grouped GEMM
per projection where torch has one, see :mod:`apt.moe.experts`), and the outputs, times
their combine weights, scatter-added back to their tokens.

Dropless (``capacity_factor=None``, the default, and always in eval mode): every
assignment is served. A token's output then depends on that token alone, so the layer is
position-wise and a causal LM stays causal, in training as in evaluation (dropout is
applied to the combined output, in token order). On a GPU the dispatch itself has no host
synchronisation; running the experts one by one needs one (none with grouped GEMM).

Capacity-limited (``capacity_factor=c`` in training mode): each expert serves at most
``ceil(c * N * k / E)`` of the ``N`` tokens' ``k`` assignments, in priority order (every
first choice before any second choice, then by position: GShard/Switch) and the rest are
dropped (the residual stream carries those tokens on). This bounds an expert's work, but
tokens compete for capacity across the whole batch: a token's output can depend on later
positions and on other sequences, so the model is not causal in training. It costs one
host synchronisation per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from apt.moe.experts import ExpertList, Groups, hoist_dropout
from apt.moe.routing import RouterOutput, expert_counts

__all__ = ["MoELayer"]


class MoELayer(nn.Module):
    """Route each token to ``top_k`` of ``experts`` and sum their weighted outputs.

    ``experts`` are expert modules (an :class:`~apt.moe.experts.ExpertList` or a sequence),
    ``router(x)`` returns a :class:`~apt.moe.routing.RouterOutput`. ``dropout`` applies to
    the combined routed output, in token order; by default it is taken out of built-in
    MLP/SwiGLU experts (:func:`~apt.moe.experts.hoist_dropout`). Other experts keep their own
    dropout, whose masks then depend on the routing of the other tokens. After each
    training forward, ``last_stats`` holds detached tensors: ``moe_dropped_frac``,
    ``moe_load_max`` (busiest expert's share of assignments times E; 1.0 is perfect balance)
    and ``router_entropy``; evaluation forwards leave them alone.
    """

    def __init__(
        self,
        experts: ExpertList | Sequence[nn.Module],
        router: nn.Module,
        top_k: int,
        capacity_factor: float | None = None,
        shared_expert: nn.Module | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        if not experts:
            raise ValueError("MoELayer needs at least one expert")
        experts = experts if isinstance(experts, ExpertList) else ExpertList(experts)
        E = len(experts)
        if not isinstance(top_k, int) or not 1 <= top_k <= E:
            raise ValueError(f"top_k must be an integer in [1, {E}] (the number of experts), got {top_k!r}")
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None (dropless), got {capacity_factor!r}")
        router_k = getattr(router, "top_k", top_k)
        if router_k != top_k:
            raise ValueError(f"the router picks top_k={router_k} experts but the MoE layer was given top_k={top_k}")
        router_e = getattr(router, "num_experts", E)
        if router_e != E:
            raise ValueError(f"the router routes to {router_e} experts but {E} were given")
        self.experts = experts
        self.router = router
        self.top_k = top_k
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)
        self.shared_expert = shared_expert
        if dropout is None:
            dropout = hoist_dropout(experts)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.last_stats: dict[str, torch.Tensor] = {}

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert accepts for ``num_tokens`` tokens in training; None: all."""
        if self.capacity_factor is None:
            return None
        return max(1, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])  # (N, C)
        N, E, k = xf.size(0), self.num_experts, self.top_k
        r: RouterOutput = self.router(xf)
        capacity = self.capacity(N) if self.training else None
        flat_expert = r.indices.reshape(-1)  # (N*k,) token-major: token t's choices at t*k .. t*k+k-1
        assignment = None  # served assignments (positions in flat_expert); None: all of them
        if capacity is not None:
            assignment = _within_capacity(r.indices, E, capacity).nonzero().squeeze(1)  # host sync
            flat_expert = flat_expert[assignment]
        order = torch.argsort(flat_expert, stable=True)  # (M,)
        served = order if assignment is None else assignment[order]  # (M,) into the N*k assignments
        token = served // k  # (M,)
        counts = expert_counts(flat_expert, E)  # (E,)
        y = self.experts(xf[token], Groups(flat_expert[order], counts))  # (M, C)
        weight = r.weights.reshape(-1)[served]  # (M,)
        out = torch.zeros_like(xf).index_add_(0, token, (y * weight[:, None]).to(xf.dtype))  # (N, C)
        out = self.dropout(out)  # in token order: a token's mask does not depend on the routing
        if self.shared_expert is not None:
            out = out + self.shared_expert(xf)
        if self.training and N:
            load = counts if assignment is None else expert_counts(r.indices, E)  # before dropping
            self._record_stats(r.probs, load, dropped=1.0 - served.numel() / (N * k))
        return out.view(shape)

    @torch.no_grad()
    def _record_stats(self, probs: torch.Tensor, load: torch.Tensor, dropped: float) -> None:
        probs = probs.float()  # (N, E)
        self.last_stats = {
            "moe_dropped_frac": probs.new_full((), dropped),  # a fill, not a host-to-device copy
            "moe_load_max": load.max().float() * self.num_experts / load.sum(),
            "router_entropy": -(probs * probs.clamp_min(1e-9).log()).sum(-1).mean(),
        }

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, top_k={self.top_k}, capacity_factor={self.capacity_factor}"


def _within_capacity(indices: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """(N*k,) token-major mask of the assignments an expert with ``capacity`` slots serves.

    Priority: all first choices (by position), then all second choices, ...
    """
    N, k = indices.shape
    slot_major = indices.t().reshape(-1)  # (k*N,)
    onehot = F.one_hot(slot_major, num_experts)  # (k*N, E)
    position = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1  # slot within its expert
    return (position < capacity).view(k, N).t().reshape(-1)
