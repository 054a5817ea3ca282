"""Contracts shared by every part of APT: providers, the provider registry, the config.

Nothing here imports torch, so config composition and validation stay fast.
"""

from apt.core.config import APTConfig
from apt.core.provider import AttentionProvider, FFNProvider, Provider, RouterProvider
from apt.core.registry import Registry, RegistryError, registry

__all__ = [
    "APTConfig",
    "AttentionProvider",
    "FFNProvider",
    "Provider",
    "Registry",
    "RegistryError",
    "RouterProvider",
    "registry",
]
