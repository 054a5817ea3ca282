"""Small building blocks shared by the LM and the attention providers: norms and rotary positions.

Rotary embeddings live here rather than in the model because attention layers apply them
to queries and keys themselves: the block only ever calls ``attn(x)``, so a provider that
cannot apply rotary positions is detected at build time instead of silently ignoring them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "LayerNorm", "RMSNorm", "Rotary", "apply_rotary", "make_norm"]

NORMS = ("layernorm", "rmsnorm")


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` with an optional bias (``APTConfig.bias``), as in nanoGPT."""

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-5) -> None:
        super().__init__(dim, eps=eps, bias=bias)


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias); fused ``F.rms_norm`` when torch has it."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(F, "rms_norm"):
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def make_norm(kind: str, dim: int, bias: bool = False) -> nn.Module:
    """The norm named by ``APTConfig.norm``."""
    if kind == "layernorm":
        return LayerNorm(dim, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim)
    raise ValueError(f"unknown norm {kind!r}; choose one of {list(NORMS)}")


class Rotary(nn.Module):
    """Precomputed rotary tables for one head size (RoFormer, "rotate-half" layout).

    ``cos``/``sin`` (T, hs/2) and the full-width ``cos2``/``sin2`` (T, hs) that the forward
    uses are non-persistent buffers, so checkpoints do not carry them and a
    model built with another ``max_seq_len`` can still load the weights.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (T, hs/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)
        self.register_buffer("cos2", torch.cat((freqs.cos(), freqs.cos()), dim=-1), persistent=False)  # (T, hs)
        self.register_buffer("sin2", torch.cat((-freqs.sin(), freqs.sin()), dim=-1), persistent=False)
        self.max_seq_len = max_seq_len

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q`` and ``k`` of shape ``(B, nh, T, hs)`` by their positions ``0..T-1``."""
        T = q.size(-2)
        if T > self.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds the rotary table size {self.max_seq_len}")
        cos2, sin2 = self.cos2[:T].to(q.dtype), self.sin2[:T].to(q.dtype)  # (T, hs)
        return _rotate(q, cos2, sin2), _rotate(k, cos2, sin2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[..., i], x[..., i + hs/2])`` by the angles whose cos/sin (..., hs/2) are given."""
    return _rotate(x, torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1))


def _rotate(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """``x * (cos, cos) + (x2, x1) * (-sin, sin)``: 4 kernels, not 7 (a tiny CPU model pays per kernel).

    Bitwise equal to ``(x1 cos - x2 sin, x1 sin + x2 cos)``: negation is exact and addition commutes.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs/2) each
    return x * cos2 + torch.cat((x2, x1), dim=-1) * sin2
