"""Built-in causal self-attention providers: ``sdpa`` (default), ``naive`` and ``autopoietic``.

The providers are factories that import no torch: checking a config instantiates them and
runs ``validate_config`` without the layers, which live in
:mod:`apt.providers.layers.attention` and are imported on the first ``create_layer``
(``from apt.providers.attention import CausalSelfAttention`` still works, lazily).

Rotary positions are applied inside the layer (``supports_rope = True``): ``ModelBuilder``
passes ``position``, ``rope_base`` and ``max_seq_len`` to ``create_layer``. A provider that
does not declare ``supports_rope`` is refused for ``position='rope'`` at build time.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from apt.core.lazy import lazy_attributes
from apt.core.provider import AttentionProvider
from apt.providers.options import DeclaredOptions

if TYPE_CHECKING:
    from torch import nn

# The layer classes (CausalSelfAttention, ...) are reachable here too, lazily (__getattr__).
__all__ = [
    "AutopoieticAttentionProvider",
    "BuiltinAttentionProvider",
    "NaiveAttentionProvider",
    "SDPAAttentionProvider",
]

_LAYERS = "apt.providers.layers.attention"


__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ("AutopoieticAttention", "CausalSelfAttention", "NaiveCausalSelfAttention"), _LAYERS))


class BuiltinAttentionProvider(DeclaredOptions, AttentionProvider):
    """Shared checks and construction for the built-in attention providers."""

    supports_rope = True
    #: ``"module:Class"`` of the layer :meth:`create_layer` builds.
    layer: ClassVar[str] = f"{_LAYERS}:CausalSelfAttention"

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        d_model, num_heads = config.get("d_model", 0), config.get("num_heads", 1)
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"{self.name} attention: d_model must be a positive integer, got {d_model!r}")
        if not isinstance(num_heads, int) or num_heads <= 0 or d_model % num_heads:
            raise ValueError(
                f"{self.name} attention: d_model={d_model} is not divisible by num_heads={num_heads}"
            )
        if config.get("position") == "rope" and (d_model // num_heads) % 2:
            raise ValueError(f"{self.name} attention: rope needs an even head dim, got {d_model // num_heads}")
        self.resolved_options()
        return True

    def layer_kwargs(self) -> dict[str, Any]:
        return {}

    def create_layer(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        bias: bool = False,
        position: str = "learned",
        rope_base: float = 10000.0,
        max_seq_len: int = 1024,
        **kwargs: Any,
    ) -> nn.Module:
        """A layer ``(B, T, C) -> (B, T, C)``; rotary positions when ``position == 'rope'``.

        Other keywords from the builder (``layer_idx``, ``num_layers``) are accepted and unused.
        """
        from apt.modeling.layers import Rotary

        module, _, cls_name = self.layer.partition(":")
        layer_cls = getattr(importlib.import_module(module), cls_name)
        rotary = Rotary(d_model // num_heads, max_seq_len, rope_base) if position == "rope" else None
        return layer_cls(d_model, num_heads, dropout, bias=bias, rotary=rotary, **self.layer_kwargs())


class SDPAAttentionProvider(BuiltinAttentionProvider):
    """Causal attention via torch ``scaled_dot_product_attention`` (fused kernels where available)."""

    name = "sdpa"


class NaiveAttentionProvider(BuiltinAttentionProvider):
    """Explicit ``softmax(QK^T/sqrt(d)) V``: slow, readable, the reference for other providers."""

    name = "naive"
    layer = f"{_LAYERS}:NaiveCausalSelfAttention"


class AutopoieticAttentionProvider(BuiltinAttentionProvider):
    """SDPA plus a gated low-rank self-perturbation (``alpha``, ``init_tau``, ``sr_ratio``)."""

    name = "autopoietic"
    layer = f"{_LAYERS}:AutopoieticAttention"
    options = {"alpha": 0.1, "init_tau": 1.3, "sr_ratio": 6}

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        super().validate_config(config)
        opts = self.resolved_options()
        if not isinstance(opts["sr_ratio"], int) or opts["sr_ratio"] <= 0:
            raise ValueError(f"autopoietic attention: sr_ratio must be a positive integer, got {opts['sr_ratio']!r}")
        for key in ("alpha", "init_tau"):
            if not isinstance(opts[key], int | float) or isinstance(opts[key], bool):
                raise ValueError(f"autopoietic attention: {key} must be a number, got {opts[key]!r}")
        return True

    def layer_kwargs(self) -> dict[str, Any]:
        return self.resolved_options()
