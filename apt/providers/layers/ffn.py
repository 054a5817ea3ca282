"""Feed-forward layers of the built-in ``mlp`` and ``swiglu`` providers.

Both name their residual output projection ``c_proj`` so the LM's init scales it by
``1/sqrt(2 * num_layers)`` like every other residual branch (nanoGPT's GPT-2 init).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "SwiGLU"]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


#: Activations ``mlp`` accepts (option ``activation``).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """``c_proj(act(c_fc(x)))``: (B, T, C) -> (B, T, d_ff) -> (B, T, C)."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False, activation: str = "gelu"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.c_fc = nn.Linear(d_model, d_ff, bias=bias)
        self.c_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class SwiGLU(nn.Module):
    """``c_proj(silu(x W_g) * (x W_u))`` with the gate and up projections fused in one matmul."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, 2 * d_ff, bias=bias)  # gate and up, fused
        self.c_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)  # (B, T, d_ff) each
        return self.dropout(self.c_proj(F.silu(gate) * up))
