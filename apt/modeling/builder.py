"""ModelBuilder: turns an APTConfig into layers and a TransformerLM through the provider registry.

Everything that can be checked without building anything is checked in the constructor:
the config's own values, the provider names (an unknown one raises the registry's error
listing the available names), excluded combinations, each provider's ``validate_config``
and rotary support. A bad choice therefore fails before any weight is allocated.

Keywords the builder passes to providers (a provider receives only those its
``create_layer``/``create_router`` signature accepts, so the guide's minimal providers work):

- attention ``create_layer(d_model, num_heads, dropout, bias=, position=, rope_base=,
  max_seq_len=, layer_idx=, num_layers=)``;
- ffn ``create_layer(d_model, d_ff, dropout, bias=, layer_idx=, num_layers=, registry=,
  router_name=, router_config=)`` (the last three let ``moe`` build its router and experts
  from the same registry);
- router ``create_router(d_model, num_experts, top_k=)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from apt.core.config import APTConfig
from apt.core.provider import Provider
from apt.core.registry import Registry
from apt.modeling.transformer import Block, TransformerLM

__all__ = ["ModelBuilder", "call_accepting"]

_DIMS = (
    "d_model", "num_heads", "num_layers", "d_ff", "dropout", "vocab_size",
    "max_seq_len", "norm", "position", "rope_base", "bias",
)


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
        self.attention_name = registry.resolve_name("attention", config.attention_name)
        self.ffn_name = registry.resolve_name("ffn", config.ffn_name)
        self.attention_provider = self._provider("attention", self.attention_name, config.attention_config)
        self.ffn_provider = self._provider(
            "ffn", self.ffn_name, config.ffn_config,
            registry=registry, router_name=config.router_name, router_config=dict(config.router_config),
        )
        selection = {"attention": self.attention_name, "ffn": self.ffn_name}
        # A router is part of the selection only when something uses one.
        self.uses_router = config.router_name is not None or bool(getattr(self.ffn_provider, "uses_router", False))
        self.router_name: str | None = None
        self.router_provider: Provider | None = None
        if self.uses_router:
            self.router_name = registry.resolve_name("router", config.router_name)
            self.router_provider = self._provider("router", self.router_name, config.router_config)
            selection["router"] = self.router_name
        registry.check_selection(selection)
        if config.position == "rope" and not getattr(self.attention_provider, "supports_rope", False):
            raise ValueError(
                f"attention provider {self.attention_name!r} does not apply rotary positions "
                "(its provider class does not set supports_rope = True); use position='learned' "
                f"or an attention provider that does: {self._rope_capable()}"
            )

    # -- layers -------------------------------------------------------------------------
    def build_attention(self, layer_idx: int = 0) -> nn.Module:
        """One attention layer from the selected provider: ``(B, T, C) -> (B, T, C)``."""
        c = self.config
        return call_accepting(
            self.attention_provider.create_layer, c.d_model, c.num_heads, c.dropout,
            bias=c.bias, position=c.position, rope_base=c.rope_base, max_seq_len=c.max_seq_len,
            layer_idx=layer_idx, num_layers=c.num_layers,
        )

    def build_ffn(self, layer_idx: int = 0) -> nn.Module:
        """One FFN layer from the selected provider: ``(B, T, C) -> (B, T, C)``."""
        c = self.config
        return call_accepting(
            self.ffn_provider.create_layer, c.d_model, c.d_ff, c.dropout,
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
            provider = self.router_provider = self._provider("router", self.router_name, c.router_config)
        if num_experts is None:
            num_experts = int(c.router_config.get("num_experts", c.ffn_config.get("num_experts", 8)))
        kwargs = {}
        top_k = top_k if top_k is not None else c.ffn_config.get("top_k")
        if top_k is not None:
            kwargs["top_k"] = int(top_k)
        return call_accepting(provider.create_router, c.d_model, num_experts, **kwargs)

    def build_model(self) -> TransformerLM:
        """The full LM: ``num_layers`` pre-norm blocks from the selected providers."""
        c = self.config
        blocks = [
            Block(c.d_model, self.build_attention(i), self.build_ffn(i), norm=c.norm, bias=c.bias)
            for i in range(c.num_layers)
        ]
        return TransformerLM(c, blocks)

    # -- internals ----------------------------------------------------------------------
    def _provider(self, kind: str, name: str, options: Mapping[str, Any], **extra: Any) -> Provider:
        """Instantiate ``kind``/``name`` with its options and run its ``validate_config``."""
        provider = self.registry.get(kind, name, options)
        merged = {key: getattr(self.config, key) for key in _DIMS}
        merged.update(options or {})
        merged.update(extra)
        try:
            ok = provider.validate_config(merged)
        except ValueError as exc:
            raise ValueError(f"invalid config for {kind} provider {name!r}: {exc}") from exc
        if ok is False:
            shown = {k: v for k, v in merged.items() if k not in extra}
            raise ValueError(f"{kind} provider {name!r} rejected its config {shown}")
        return provider

    def _rope_capable(self) -> list[str]:
        names = []
        for name in self.registry.names("attention"):
            try:
                if getattr(self.registry.get_class("attention", name), "supports_rope", False):
                    names.append(name)
            except Exception:  # noqa: BLE001 - an unimportable provider is simply not listed
                continue
        return names


def call_accepting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the keywords its signature accepts (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return fn(*args, **kwargs)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fn(*args, **{k: v for k, v in kwargs.items() if k in names})
