"""The experts of an MoE layer, run on token rows already sorted by expert.

:class:`ExpertList` holds one module per expert (any FFN: the built-in ``mlp`` or
``swiglu``, or another provider's layers) and maps rows ``x`` (M, C), sorted by expert, to
their experts' outputs (M, C); :class:`Groups` says which rows belong to which expert.

How it runs:

- expert by expert on contiguous slices (one module call each, so a hidden state stays in
  cache while its expert runs). This needs the group sizes on the host: one sync per layer
  on a GPU. It is the path on CPU, where torch's grouped GEMM is itself a loop of matmuls
  over the groups and running it projection by projection measured slower (docs/benchmarks.md);
- one grouped GEMM per projection (``torch.nn.functional.grouped_mm``, weights stacked for
  the call) for built-in MLP/SwiGLU experts on CUDA in bfloat16, the case torch documents a
  grouped kernel for: no host sync. Stacking copies the expert weights once per forward,
  about what autocast's bfloat16 casts of the same weights cost anyway. This path cannot be
  run on the CPU-only development machines; tests run the same function on CPU against the
  per-expert path.

Dropout: a module dropping out its slice draws a token's mask by its position among the
rows of its expert, which depends on how the other tokens were routed. So
:func:`hoist_dropout` takes the built-in experts' dropout out, and
:class:`~apt.moe.layer.MoELayer` applies it to its combined output, in token order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from apt.providers.ffn import ACTIVATIONS, MLP, SwiGLU

__all__ = ["ExpertList", "Groups", "grouped_ffn", "hoist_dropout"]

log = logging.getLogger(__name__)
_reported: set[tuple[str, torch.dtype, bool]] = set()


class Groups:
    """Which rows of a sorted (M, C) batch belong to which expert.

    ``ids`` (M,) is each row's expert (non-decreasing); ``counts`` (E,) the rows per expert.
    ``ends`` (cumulative int32 counts) stays on the device; :meth:`sizes` moves the counts to
    the host (a sync on a GPU), once.
    """

    def __init__(self, ids: torch.Tensor, counts: torch.Tensor) -> None:
        self.ids = ids
        self.counts = counts
        self.ends = counts.cumsum(0).to(torch.int32)  # (E,)
        self._sizes: list[int] | None = None

    def sizes(self) -> list[int]:
        if self._sizes is None:
            self._sizes = self.counts.tolist()
        return self._sizes


class ExpertList(nn.ModuleList):
    """One module per expert; ``forward(x, groups)`` runs each on its rows of ``x``."""

    may_leave_parameters_unused = True  # an expert no token chose gets no gradient

    def forward(self, x: torch.Tensor, groups: Groups) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        if _grouped_ok(self, x, dtype):
            return grouped_ffn(list(self), x, groups, dtype)
        outs = [expert(xe) for expert, xe in zip(self, x.split(groups.sizes()), strict=True) if xe.size(0)]
        return torch.cat(outs) if outs else x.new_zeros(x.shape)  # (M, C)


def grouped_ffn(experts: Sequence[nn.Module], x: torch.Tensor, groups: Groups, dtype: torch.dtype) -> torch.Tensor:
    """Built-in MLP or SwiGLU ``experts`` (no dropout) on sorted rows ``x`` (M, C), one grouped
    GEMM per projection over all experts: the same function as calling each on its slice."""
    h = _grouped_linear([e.c_fc for e in experts], x, groups, dtype)  # (M, d_ff) or (M, 2 d_ff)
    if isinstance(experts[0], SwiGLU):
        gate, up = h.chunk(2, dim=-1)
        h = F.silu(gate) * up
    else:
        h = ACTIVATIONS[experts[0].activation](h)
    return _grouped_linear([e.c_proj for e in experts], h, groups, dtype)  # (M, C)


def hoist_dropout(experts: Sequence[nn.Module]) -> float:
    """Take the dropout out of built-in MLP/SwiGLU experts sharing one rate and return it.

    Other experts keep theirs and 0.0 is returned: their masks then depend on the routing.
    """
    rates = {e.dropout.p if isinstance(e.dropout, nn.Dropout) else 0.0
             for e in experts if type(e) in (MLP, SwiGLU)}
    if len(rates) != 1 or any(type(e) not in (MLP, SwiGLU) for e in experts):
        return 0.0
    for e in experts:
        e.dropout = nn.Identity()
    return rates.pop()


def _grouped_linear(layers: list[nn.Linear], x: torch.Tensor, groups: Groups, dtype: torch.dtype) -> torch.Tensor:
    w = torch.stack([layer.weight for layer in layers]).to(dtype)  # (E, out, in)
    y = F.grouped_mm(x.to(dtype), w.transpose(-2, -1), offs=groups.ends)  # (M, out)
    if layers[0].bias is not None:
        y = y + torch.stack([layer.bias for layer in layers]).to(dtype)[groups.ids]
    return y


def _grouped_ok(experts: ExpertList, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Grouped GEMM for built-in experts of one kind and shape, without dropout, on CUDA in bfloat16."""
    first = experts[0]
    ok = (
        hasattr(F, "grouped_mm") and x.device.type == "cuda" and dtype == torch.bfloat16 and x.size(0) > 0
        and type(first) in (MLP, SwiGLU)
        and all(type(e) is type(first) and isinstance(e.dropout, nn.Identity)
                and getattr(e, "activation", None) == getattr(first, "activation", None)
                and e.c_fc.weight.shape == first.c_fc.weight.shape for e in experts)
        and all(d % 8 == 0 for d in first.c_fc.weight.shape)  # 16-byte aligned bfloat16 rows
    )
    if not torch.compiler.is_compiling() and (x.device.type, dtype, ok) not in _reported:
        _reported.add((x.device.type, dtype, ok))
        log.info("moe experts on %s/%s: %s", x.device.type, str(dtype).removeprefix("torch."),
                 "one grouped GEMM per projection" if ok else "expert by expert on contiguous slices")
    return ok
