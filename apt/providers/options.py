"""Declared options for the built-in providers.

Each built-in provider declares its ``name`` and its ``options`` with their defaults. A
config key outside ``options`` is an error naming the valid ones, so a typo in a YAML file
fails the run instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["DeclaredOptions"]


class DeclaredOptions:
    """Mixin for providers: ``get_name``/``get_version`` and option checking.

    Put it first among the bases (``class P(DeclaredOptions, FFNProvider)``) so its
    ``get_name`` wins over :class:`apt.core.Provider`'s.
    """

    kind: str  # from the provider base class (AttentionProvider.kind, ...)
    name: ClassVar[str] = ""
    #: Provider options and their defaults (e.g. ``APTConfig.ffn_config`` for an FFN provider).
    options: ClassVar[dict[str, Any]] = {}
    #: Config keys that reach the provider but are read elsewhere, not options.
    passthrough: ClassVar[tuple[str, ...]] = ()

    def get_name(self) -> str:
        return self.name

    def get_version(self) -> str:
        return "1.0.0"

    def resolved_options(self) -> dict[str, Any]:
        """The defaults updated with this provider's config; unknown keys raise ValueError."""
        own = {k: v for k, v in dict(getattr(self, "config", {}) or {}).items() if k not in self.passthrough}
        unknown = sorted(set(own) - set(self.options))
        if unknown:
            raise ValueError(
                f"{self.name} {self.kind}: unknown option(s) {unknown}; valid options: {sorted(self.options)}"
            )
        return {**self.options, **own}
