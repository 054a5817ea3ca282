"""Provider contracts: swappable model parts chosen by name from the registry.

A provider is a small factory object, not a layer: the registry instantiates it with its
config (``provider_cls(config)``) and the model builder asks it for layers. Keeping the
factory separate from the ``nn.Module`` lets a provider validate its config and describe
itself without torch being imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of the import path of config-only commands
    from torch import nn

__all__ = ["AttentionProvider", "FFNProvider", "Provider", "RouterProvider"]


class Provider:
    """Base of every provider.

    Subclasses may override ``__init__(self, config)`` without calling ``super()`` (the
    plugin guide does); every method here therefore tolerates a missing ``self.config``.
    """

    #: The registry kind this provider serves ("attention", "ffn", "router", ...).
    kind: str = ""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})

    def get_name(self) -> str:
        """Unique name within the provider's kind."""
        return type(self).__name__

    def get_version(self) -> str:
        return "0.0.0"

    def get_description(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        """Return False (or raise ``ValueError`` with a reason) when ``config`` cannot work.

        ``config`` holds the model dimensions merged with this provider's own options,
        so checks such as ``d_model % num_heads`` can be made before any layer is built.
        """
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={getattr(self, 'config', {})!r})"


class AttentionProvider(Provider):
    """Builds causal self-attention layers: ``(B, T, C) -> (B, T, C)``."""

    kind = "attention"

    def create_layer(self, d_model: int, num_heads: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement create_layer()")


class FFNProvider(Provider):
    """Builds position-wise feed-forward layers: ``(B, T, C) -> (B, T, C)``."""

    kind = "ffn"

    def create_layer(self, d_model: int, d_ff: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement create_layer()")


class RouterProvider(Provider):
    """Builds token-to-expert routers used by mixture-of-experts layers."""

    kind = "router"

    def create_router(self, d_model: int, num_experts: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement create_router()")

    def combine_weights_sum_to_one(self, num_experts: int, top_k: int, **kwargs: Any) -> bool | None:
        """Whether every router ``create_router(d_model, num_experts, top_k=top_k, **kwargs)``
        builds gives combine weights that sum to one per token, told without building one.

        ``None`` (this default) means the provider cannot tell without a router. The ``moe``
        plugin's sparse upcycling keeps the model's function only when they sum to one: it
        refuses ``False`` while the config is checked, without torch, and measures a built
        router on ``None``. An answer may raise ``ValueError`` for arguments
        ``create_router`` would refuse.
        """
        return None
