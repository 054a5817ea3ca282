"""ModelBuilder: turns an APTConfig into layers and a TransformerLM through the provider registry.

Everything that can be checked without building anything is checked in the constructor:
the config's own values, then :func:`~apt.modeling.selection.select_providers` (provider
names, each provider's ``validate_config``, the keywords its factory methods accept,
excluded combinations, rotary support). A bad choice therefore fails before any weight is
allocated, and a provider that cannot take an argument the builder passes fails naming the
provider instead of having the argument silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from apt.core.config import APTConfig
from apt.core.provider import Provider
from apt.core.registry import Registry
from apt.modeling.selection import call_provider, select_providers
from apt.modeling.transformer import Block, TransformerLM

__all__ = ["ModelBuilder"]


class ModelBuilder:
    """Builds attention, FFN and router layers and whole models from an :class:`APTConfig`.

    ``registry`` defaults to :data:`apt.core.registry`, where plugins register providers in
    ``setup``, so a plugin's provider is found by the name given in the config.
    """

    def __init__(self, config: APTConfig | Mapping[str, Any], registry: Registry | None = None) -> None:
        if not isinstance(config, APTConfig):
            config = APTConfig.from_dict(config)
        problems = config.validate()
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))
        if registry is None:
            from apt.core.registry import registry as default_registry

            registry = default_registry
        self.config = config
        self.registry = registry
        chosen = select_providers(
            config.to_dict(),
            {"attention": config.attention_name, "ffn": config.ffn_name, "router": config.router_name},
            {"attention": config.attention_config, "ffn": config.ffn_config, "router": config.router_config},
            registry,
        )
        self.attention_name, self.attention_provider = chosen.attention_name, chosen.attention
        self.ffn_name, self.ffn_provider = chosen.ffn_name, chosen.ffn
        self.router_name: str | None = chosen.router_name
        self.router_provider: Provider | None = chosen.router
        self.uses_router = chosen.router is not None

    # -- layers -------------------------------------------------------------------------
    def build_attention(self, layer_idx: int = 0) -> nn.Module:
        """One attention layer from the selected provider: ``(B, T, C) -> (B, T, C)``."""
        c = self.config
        return call_provider(
            self.attention_provider.create_layer, c.d_model, c.num_heads, c.dropout,
            owner=f"attention provider {self.attention_name!r}",
            bias=c.bias, position=c.position, rope_base=c.rope_base, max_seq_len=c.max_seq_len,
            layer_idx=layer_idx, num_layers=c.num_layers,
        )

    def build_ffn(self, layer_idx: int = 0) -> nn.Module:
        """One FFN layer from the selected provider: ``(B, T, C) -> (B, T, C)``."""
        c = self.config
        return call_provider(
            self.ffn_provider.create_layer, c.d_model, c.d_ff, c.dropout,
            owner=f"ffn provider {self.ffn_name!r}",
            bias=c.bias, layer_idx=layer_idx, num_layers=c.num_layers,
            registry=self.registry, router_name=c.router_name, router_config=dict(c.router_config),
        )

    def build_router(self, num_experts: int | None = None, top_k: int | None = None) -> nn.Module:
        """A router from the selected (or default) router provider.

        ``num_experts``/``top_k`` default to ``router_config`` then ``ffn_config`` values
        (``num_experts``, ``top_k``), then 8 experts and the router's own default ``top_k``.
        """
        c = self.config
        provider = self.router_provider
        if provider is None:
            self.router_name = self.registry.resolve_name("router", c.router_name)
            provider = self.router_provider = self.registry.get("router", self.router_name, c.router_config)
        if num_experts is None:
            num_experts = int(c.router_config.get("num_experts", c.ffn_config.get("num_experts", 8)))
        kwargs = {}
        top_k = top_k if top_k is not None else c.ffn_config.get("top_k")
        if top_k is not None:
            kwargs["top_k"] = int(top_k)
        return call_provider(provider.create_router, c.d_model, num_experts,
                             owner=f"router provider {self.router_name!r}", **kwargs)

    def build_model(self) -> TransformerLM:
        """The full LM: ``num_layers`` pre-norm blocks from the selected providers."""
        c = self.config
        blocks = [
            Block(c.d_model, self.build_attention(i), self.build_ffn(i), norm=c.norm, bias=c.bias)
            for i in range(c.num_layers)
        ]
        return TransformerLM(c, blocks)
