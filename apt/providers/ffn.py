"""Built-in feed-forward providers: ``mlp`` (GELU by default, the default) and ``swiglu``.

Both name their residual output projection ``c_proj`` so the LM's init scales it by
``1/sqrt(2 * num_layers)`` like every other residual branch (nanoGPT's GPT-2 init).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apt.core.provider import FFNProvider
from apt.providers.options import DeclaredOptions

__all__ = ["ACTIVATIONS", "MLP", "BuiltinFFNProvider", "MLPProvider", "SwiGLU", "SwiGLUProvider"]


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


class BuiltinFFNProvider(DeclaredOptions, FFNProvider):
    """Option checks shared by the built-in dense FFN providers."""

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        for key in ("d_model", "d_ff"):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{self.name} ffn: {key} must be a positive integer, got {value!r}")
        self.resolved_options()
        return True


class MLPProvider(BuiltinFFNProvider):
    """Two-layer MLP with a GELU (option ``activation``: gelu, gelu_tanh, relu, silu)."""

    name = "mlp"
    options = {"activation": "gelu"}

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        super().validate_config(config)
        act = self.resolved_options()["activation"]
        if act not in ACTIVATIONS:
            raise ValueError(f"mlp ffn: unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
        return True

    def create_layer(
        self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False, **kwargs: Any
    ) -> nn.Module:
        return MLP(d_model, d_ff, dropout, bias=bias, activation=self.resolved_options()["activation"])


class SwiGLUProvider(BuiltinFFNProvider):
    """Gated SiLU FFN (Shazeer 2020); ``d_ff`` is the gated hidden width."""

    name = "swiglu"

    def create_layer(
        self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False, **kwargs: Any
    ) -> nn.Module:
        return SwiGLU(d_model, d_ff, dropout, bias=bias)
