"""Built-in feed-forward providers: ``mlp`` (GELU by default, the default) and ``swiglu``.

The providers import no torch; their layers live in :mod:`apt.providers.layers.ffn` and
are imported on the first ``create_layer`` (``from apt.providers.ffn import MLP`` still
works, lazily).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apt.core.lazy import lazy_attributes
from apt.core.provider import FFNProvider
from apt.providers.options import DeclaredOptions

if TYPE_CHECKING:
    from torch import nn

# MLP, SwiGLU and ACTIVATIONS are reachable here too, lazily (__getattr__).
__all__ = ["ACTIVATION_NAMES", "BuiltinFFNProvider", "MLPProvider", "SwiGLUProvider"]

_LAYERS = "apt.providers.layers.ffn"

#: Activations ``mlp`` accepts (option ``activation``); the functions are
#: :data:`apt.providers.layers.ffn.ACTIVATIONS`.
ACTIVATION_NAMES: tuple[str, ...] = ("gelu", "gelu_tanh", "relu", "silu")


__getattr__ = lazy_attributes(__name__, dict.fromkeys(("ACTIVATIONS", "MLP", "SwiGLU"), _LAYERS))


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
        if act not in ACTIVATION_NAMES:
            raise ValueError(f"mlp ffn: unknown activation {act!r}; choose one of {sorted(ACTIVATION_NAMES)}")
        return True

    def create_layer(
        self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False, **kwargs: Any
    ) -> nn.Module:
        from apt.providers.layers.ffn import MLP

        return MLP(d_model, d_ff, dropout, bias=bias, activation=self.resolved_options()["activation"])


class SwiGLUProvider(BuiltinFFNProvider):
    """Gated SiLU FFN (Shazeer 2020); ``d_ff`` is the gated hidden width."""

    name = "swiglu"

    def create_layer(
        self, d_model: int, d_ff: int, dropout: float = 0.0, *, bias: bool = False, **kwargs: Any
    ) -> nn.Module:
        from apt.providers.layers.ffn import SwiGLU

        return SwiGLU(d_model, d_ff, dropout, bias=bias)
