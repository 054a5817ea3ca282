"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

Config checks, ``--help`` and ``--cfg`` must answer without importing torch, yet packages
such as :mod:`apt.modeling` or :mod:`apt.providers.attention` re-export classes that need
it. Each such module sets ``__getattr__ = lazy_attributes(__name__, {name: module})``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, locations: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``locations[name]`` when first asked."""
    table = dict(locations)

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
