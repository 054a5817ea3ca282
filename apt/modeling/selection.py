"""Which provider builds each part of the model, checked before any layer exists.

:func:`select_providers` resolves the attention, FFN and (when the FFN uses one) router
provider names against a registry, instantiates each provider with its options, runs its
``validate_config`` on the model dimensions merged with those options, checks that its
``create_layer``/``create_router`` accepts every keyword :class:`~apt.modeling.ModelBuilder`
passes, and refuses excluded combinations and rotary positions on a provider without them.
The config check and the builder both call it, so a run is refused before any data or
weight exists for exactly the reasons the builder would refuse it. No torch here.

Keywords the builder passes (a provider takes them explicitly or through ``**kwargs``):

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
from dataclasses import dataclass
from typing import Any

from apt.core.provider import Provider
from apt.core.registry import Registry

__all__ = ["KINDS", "LAYER_KEYWORDS", "ProviderSelection", "call_provider", "check_accepts",
           "select_providers"]

KINDS = ("attention", "ffn", "router")

#: Keywords ModelBuilder passes to each kind's factory method, after the positional arguments.
LAYER_KEYWORDS: dict[str, tuple[int, tuple[str, ...]]] = {
    "attention": (3, ("bias", "position", "rope_base", "max_seq_len", "layer_idx", "num_layers")),
    "ffn": (3, ("bias", "layer_idx", "num_layers", "registry", "router_name", "router_config")),
    "router": (2, ("top_k",)),
}
_METHOD = {"attention": "create_layer", "ffn": "create_layer", "router": "create_router"}

#: Model settings merged into the config a provider's ``validate_config`` sees.
MODEL_DIMS = ("d_model", "num_heads", "num_layers", "d_ff", "dropout", "vocab_size", "max_seq_len",
              "norm", "position", "rope_base", "bias")


@dataclass
class ProviderSelection:
    """The checked providers of one model (``router`` only when the FFN uses one)."""

    attention_name: str
    attention: Provider
    ffn_name: str
    ffn: Provider
    router_name: str | None = None
    router: Provider | None = None


def select_providers(dims: Mapping[str, Any], names: Mapping[str, str | None],
                     options: Mapping[str, Mapping[str, Any]], registry: Registry) -> ProviderSelection:
    """Instantiate and check the providers ``names`` selects (None: the registry default).

    ``dims`` holds model settings (:data:`MODEL_DIMS`, ``vocab_size`` may be absent before
    the data is known). Raises RegistryError for an unknown name or an excluded pair and
    ValueError, naming the provider, for a rejected config, a factory method that does not
    accept the builder's keywords, or rotary positions it cannot apply.
    """
    base = {k: dims[k] for k in MODEL_DIMS if k in dims}
    attention_name = registry.resolve_name("attention", names.get("attention"))
    attention = _provider(registry, "attention", attention_name, options.get("attention") or {}, base)
    ffn_name = registry.resolve_name("ffn", names.get("ffn"))
    router_options = dict(options.get("router") or {})
    ffn = _provider(registry, "ffn", ffn_name, options.get("ffn") or {}, base,
                    registry=registry, router_name=names.get("router"), router_config=router_options)
    selection = ProviderSelection(attention_name, attention, ffn_name, ffn)
    chosen = {"attention": attention_name, "ffn": ffn_name}
    if names.get("router") is not None or getattr(ffn, "uses_router", False):
        selection.router_name = registry.resolve_name("router", names.get("router"))
        selection.router = _provider(registry, "router", selection.router_name, router_options, base)
        chosen["router"] = selection.router_name
    registry.check_selection(chosen)
    if base.get("position") == "rope" and not getattr(attention, "supports_rope", False):
        capable = [n for n in registry.names("attention") if _supports_rope(registry, n)]
        raise ValueError(
            f"attention provider {attention_name!r} does not apply rotary positions (its provider "
            "class does not set supports_rope = True); use model.position=learned or an attention "
            f"provider that does: {capable}")
    return selection


def check_accepts(fn: Callable[..., Any], n_args: int, keywords: tuple[str, ...] | list[str], *,
                  owner: str) -> None:
    """Raise ValueError naming ``owner`` unless ``fn(*n_args positionals, **keywords)`` binds."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to check before the call
    try:
        sig.bind(*range(n_args), **dict.fromkeys(keywords))
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ValueError(f"{owner}: {name}{sig} cannot be called with {n_args} positional arguments "
                         f"and keywords {list(keywords)} ({exc}); accept them, or **kwargs") from None


def call_provider(fn: Callable[..., Any], *args: Any, owner: str, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, refusing with a message naming ``owner`` if the arguments do not bind."""
    check_accepts(fn, len(args), list(kwargs), owner=owner)
    return fn(*args, **kwargs)


def _provider(reg: Registry, kind: str, name: str, options: Mapping[str, Any],
              dims: Mapping[str, Any], **extra: Any) -> Provider:
    """Instantiate ``kind``/``name`` with ``options``; ``extra`` (e.g. ``registry=``) joins the checked config."""
    provider = reg.get(kind, name, options)
    owner = f"{kind} provider {name!r}"
    merged = {**dims, **options, **extra}
    try:
        ok = provider.validate_config(merged)
    except ValueError as exc:
        raise ValueError(f"invalid config for {owner}: {exc}") from exc
    if ok is False:
        shown = {k: v for k, v in merged.items() if k not in extra}
        raise ValueError(f"{owner} rejected its config {shown}")
    n_args, keywords = LAYER_KEYWORDS[kind]
    method = getattr(provider, _METHOD[kind], None)
    if method is None:
        raise ValueError(f"{owner} ({type(provider).__qualname__}) has no {_METHOD[kind]}() method")
    check_accepts(method, n_args, keywords, owner=owner)
    return provider


def _supports_rope(registry: Registry, name: str) -> bool:
    try:
        return bool(getattr(registry.get_class("attention", name), "supports_rope", False))
    except Exception:  # noqa: BLE001 - an unimportable provider is simply not listed
        return False
