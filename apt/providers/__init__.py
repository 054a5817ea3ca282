"""APT's built-in providers, one module per family.

The catalog below names each provider's class by import path so that listing and
validating provider names does not import torch; the class is imported on first use.
"""

from __future__ import annotations

__all__ = ["BUILTIN_PROVIDERS"]

#: (kind, name, "module:Class", is_default)
BUILTIN_PROVIDERS: tuple[tuple[str, str, str, bool], ...] = (
    ("attention", "sdpa", "apt.providers.attention:SDPAAttentionProvider", True),
    ("attention", "naive", "apt.providers.attention:NaiveAttentionProvider", False),
    ("attention", "autopoietic", "apt.providers.attention:AutopoieticAttentionProvider", False),
    ("attention", "flash", "apt.providers.flash:FlashAttentionProvider", False),
    ("ffn", "mlp", "apt.providers.ffn:MLPProvider", True),
    ("ffn", "swiglu", "apt.providers.ffn:SwiGLUProvider", False),
    ("ffn", "moe", "apt.providers.moe:MoEProvider", False),
    ("router", "topk", "apt.providers.router:TopKRouterProvider", True),
    ("router", "switch", "apt.providers.router:SwitchRouterProvider", False),
)

