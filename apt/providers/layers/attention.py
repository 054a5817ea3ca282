"""Causal self-attention layers of the built-in attention providers (``sdpa``, ``naive``, ``autopoietic``).

All three share one parameterisation (a fused ``c_attn`` qkv projection and a ``c_proj``
output projection, nanoGPT's names), so their weights are interchangeable: the conformance
kit copies a layer's state dict into the ``naive`` reference to check that it computes the
same function, and a checkpoint trained with one provider loads into another.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apt.modeling.layers import Rotary

__all__ = ["AutopoieticAttention", "CausalSelfAttention", "NaiveCausalSelfAttention"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``.

    Subclasses change only :meth:`attend` (the ``(q, k, v) -> y`` core) to swap the kernel
    while keeping projections, rotary positions and dropout identical.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        bias: bool = False,
        rotary: Rotary | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = float(dropout)
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rotary = rotary

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project ``x`` (B, T, C) to per-head ``q, k, v`` (B, nh, T, hs), rotary applied."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention core: (B, nh, T, hs) x3 -> (B, nh, T, hs)."""
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """Heads back to channels and the output projection: (B, nh, T, hs) -> (B, T, C)."""
        B, _, T, _ = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, self.num_heads * self.head_dim)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return self.merge(self.attend(q, k, v))


class NaiveCausalSelfAttention(CausalSelfAttention):
    """The readable reference: ``softmax(QK^T / sqrt(hs) + causal mask) V``, softmax in float32."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(d_model, num_heads, dropout, **kwargs)
        self.attn_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T = q.size(-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        att = att.float().masked_fill(~mask, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1).to(v.dtype))
        return att @ v  # (B, nh, T, hs)


class AutopoieticAttention(CausalSelfAttention):
    """SDPA plus a gated low-rank self-perturbation of its own output.

    ``out = attn + alpha * tanh(tau) * merge(g * V_r(U_r(x)))`` (added per head, before the
    output projection). ``g`` is a per-head sigmoid gate computed from the *running* mean of
    the queries (mean over positions ``<= t``): a mean over the whole sequence would leak
    future tokens into earlier outputs. At ``alpha = 0`` the layer equals ``sdpa`` exactly.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        alpha: float = 0.1,
        init_tau: float = 1.3,
        sr_ratio: int = 6,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, num_heads, dropout, **kwargs)
        self.alpha = float(alpha)
        self.rank = max(4, d_model // sr_ratio)
        bias = self.c_attn.bias is not None
        self.u_r = nn.Linear(d_model, self.rank, bias=bias)
        self.v_r = nn.Linear(self.rank, d_model, bias=bias)
        self.tau = nn.Parameter(torch.tensor(float(init_tau)))
        self.gate_weight = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # (nh, hs)
        self.gate_bias = nn.Parameter(torch.zeros(num_heads))  # (nh,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x)
        y = self.attend(q, k, v)  # (B, nh, T, hs)
        if self.alpha == 0.0:
            return self.merge(y)
        steps = torch.arange(1, T + 1, device=x.device, dtype=q.dtype).view(1, 1, T, 1)
        q_mean = q.cumsum(dim=2) / steps  # (B, nh, T, hs), causal running mean
        g = torch.sigmoid(
            torch.einsum("bhtd,hd->bht", q_mean, self.gate_weight.to(q.dtype))
            + self.gate_bias.to(q.dtype).view(1, -1, 1)
        ).unsqueeze(-1)  # (B, nh, T, 1)
        p = self.v_r(self.u_r(x)).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        return self.merge(y + (self.alpha * torch.tanh(self.tau)).to(y.dtype) * g * p)
