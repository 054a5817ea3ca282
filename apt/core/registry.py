"""The provider registry: kind -> name -> provider class, with defaults and exclusions.

Classes may be registered as ``"package.module:ClassName"`` strings and are imported on
first use; built-in providers are registered that way so that checking a provider *name*
(``--cfg``, validation) never imports torch. Whatever a name points at is checked to be a
:class:`~apt.core.Provider` subclass of the registry kind (a class declaring another
``kind`` is refused) when it is registered or imported, before anything calls it: a
config's ``_target_: logging.config.dictConfig`` is refused, never run.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from apt.core.errors import describe
from apt.core.provider import Provider

__all__ = ["ENTRY_POINT_GROUP", "ProviderSpec", "Registry", "RegistryError", "provider_class_problem", "registry"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "apt.providers"


class RegistryError(LookupError):
    """An unknown kind or name, a clash, or an excluded combination of providers."""


@dataclass
class ProviderSpec:
    """One registry entry. ``target`` is a class or a lazy ``"module:attr"`` path."""

    kind: str
    name: str
    target: type[Provider] | str
    excludes: tuple[str, ...] = ()
    origin: str = "user"
    _cls: type[Provider] | None = field(default=None, repr=False)

    def load(self) -> type[Provider]:
        if self._cls is None:
            if isinstance(self.target, str):
                module_name, _, attr = self.target.partition(":")
                try:
                    cls = getattr(importlib.import_module(module_name), attr)
                except (ImportError, AttributeError) as exc:
                    raise RegistryError(
                        f"{self.kind} provider {self.name!r} points at {self.target!r}, "
                        f"which cannot be imported: {exc}"
                    ) from exc
                problem = provider_class_problem(self.kind, cls)
                if problem:
                    raise RegistryError(f"{self.kind} provider {self.name!r} points at {self.target!r}, which {problem}")
                self._cls = cls
            else:
                self._cls = self.target
        return self._cls

    def same_target(self, other: type[Provider] | str) -> bool:
        if isinstance(other, str) or isinstance(self.target, str):
            return _dotted(other) == _dotted(self.target)
        return other is self.target


def provider_class_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot serve as a ``kind`` provider (``"is ..."``), or None; calls nothing.

    A plain :class:`Provider` subclass (``kind`` empty) serves any kind, as the plugin guide's
    providers do; one of :class:`~apt.core.AttentionProvider` & co. serves its own kind only.
    """
    expected = f"a provider of kind {kind!r} (a subclass of apt.core.Provider)"
    if not isinstance(obj, type) or not issubclass(obj, Provider):
        return f"is {describe(obj)}, not {expected}"
    if obj.kind and obj.kind != kind:
        return f"is {describe(obj)}, a provider of kind {obj.kind!r}, not {expected}"
    return None


def _dotted(target: type | str) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


class Registry:
    """Maps ``(kind, name)`` to provider classes.

    ``Registry()`` starts empty, for isolated tests; :meth:`with_builtins` adds APT's own
    providers. The module-level :data:`registry` has the built-ins and, on first lookup,
    the providers that installed packages declare under the ``apt.providers`` entry-point
    group.
    """

    def __init__(self, *, entry_points: bool = False) -> None:
        self._specs: dict[str, dict[str, ProviderSpec]] = {}
        self._defaults: dict[str, str] = {}
        self._want_entry_points = entry_points
        self._entry_points_loaded = False

    @classmethod
    def with_builtins(cls, *, entry_points: bool = False) -> Registry:
        from apt.providers import BUILTIN_PROVIDERS  # the catalog: data, read one way

        reg = cls(entry_points=entry_points)
        for kind, name, target, default in BUILTIN_PROVIDERS:
            reg.register(kind, name, target, default=default, origin="built-in")
        return reg

    # -- registration -------------------------------------------------------------------
    def register(
        self,
        kind: str,
        name: str,
        provider_cls: type[Provider] | str,
        default: bool = False,
        excludes: Iterable[str] | None = None,
        *,
        override: bool = False,
        origin: str = "user",
    ) -> None:
        """Register ``provider_cls`` as ``kind``/``name``.

        Registering the same class again is a no-op (plugins set up twice stay harmless);
        a *different* class under a taken name is an error unless ``override=True``, so a
        plugin cannot silently replace a provider another part of the run relies on.
        """
        if not kind or not name:
            raise ValueError(f"provider kind and name must be non-empty, got kind={kind!r} name={name!r}")
        if not isinstance(provider_cls, str | type):
            raise TypeError(f"provider_cls for {kind}/{name} must be a class or 'module:attr', got {provider_cls!r}")
        problem = provider_class_problem(kind, provider_cls) if isinstance(provider_cls, type) else None
        if problem:
            raise TypeError(f"{kind} provider {name!r}: {_dotted(provider_cls)} {problem}")
        if isinstance(excludes, str):
            excludes = [excludes]
        specs = self._specs.setdefault(kind, {})
        old = specs.get(name)
        if old is not None and not old.same_target(provider_cls) and not override:
            raise RegistryError(
                f"{kind} provider {name!r} is already registered to {_dotted(old.target)}; "
                f"pass override=True to replace it with {_dotted(provider_cls)}"
            )
        specs[name] = ProviderSpec(kind, name, provider_cls, tuple(excludes or ()), origin)
        if default:
            self._defaults[kind] = name

    def unregister(self, kind: str, name: str) -> None:
        self._spec(kind, name)
        del self._specs[kind][name]
        if self._defaults.get(kind) == name:
            del self._defaults[kind]

    # -- lookup -------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        self._maybe_load_entry_points()
        return sorted(self._specs)

    def names(self, kind: str) -> list[str]:
        self._maybe_load_entry_points()
        return sorted(self._specs.get(kind, {}))

    def has(self, kind: str, name: str) -> bool:
        self._maybe_load_entry_points()
        return name in self._specs.get(kind, {})

    def default_name(self, kind: str) -> str:
        self._maybe_load_entry_points()
        if kind in self._defaults:
            return self._defaults[kind]
        names = self.names(kind)
        if len(names) == 1:
            return names[0]
        raise RegistryError(
            f"no default {kind} provider is set; choose one of {names}" if names
            else f"no {kind} providers are registered; known kinds: {self.kinds()}"
        )

    def resolve_name(self, kind: str, name: str | None) -> str:
        """The registered name that ``name`` selects (the default when ``None``)."""
        name = self.default_name(kind) if name is None else name
        self._spec(kind, name)
        return name

    def get_class(self, kind: str, name: str | None = None) -> type[Provider]:
        return self._spec(kind, self.resolve_name(kind, name)).load()

    def get(self, kind: str, name: str | None = None, config: Mapping[str, Any] | None = None) -> Provider:
        """Instantiate the provider ``kind``/``name`` (default when no name) with ``config``."""
        cls = self.get_class(kind, name)
        return cls(dict(config or {}))

    def spec(self, kind: str, name: str) -> ProviderSpec:
        return self._spec(kind, name)

    def list_providers(self, kind: str | None = None) -> dict[str, list[str]] | list[str]:
        """Registered names: a sorted list for one kind, or ``{kind: [names]}`` for all."""
        if kind is not None:
            return self.names(kind)
        return {k: self.names(k) for k in self.kinds()}

    def check_selection(self, selection: Mapping[str, str | None]) -> None:
        """Raise when two selected providers exclude each other.

        ``excludes`` entries are either a bare name (any kind) or ``"kind:name"``; the rule
        holds in both directions.
        """
        chosen = {(kind, self.resolve_name(kind, name)) for kind, name in selection.items()}
        for kind, name in sorted(chosen):
            for other in self._spec(kind, name).excludes:
                okind, _, oname = other.rpartition(":")
                for ck, cn in sorted(chosen):
                    if (ck, cn) != (kind, name) and cn == oname and (not okind or okind == ck):
                        raise RegistryError(
                            f"{kind} provider {name!r} excludes {ck} provider {cn!r}; "
                            "they cannot be selected together"
                        )

    # -- internals ----------------------------------------------------------------------
    def _spec(self, kind: str, name: str) -> ProviderSpec:
        self._maybe_load_entry_points()
        specs = self._specs.get(kind)
        if specs is None:
            raise RegistryError(f"unknown provider kind {kind!r}; known kinds: {sorted(self._specs)}")
        if name not in specs:
            hint = difflib.get_close_matches(name, list(specs), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise RegistryError(
                f"unknown {kind} provider {name!r}{did_you_mean}; available: {sorted(specs)}"
            )
        return specs[name]

    def _maybe_load_entry_points(self) -> None:
        if self._want_entry_points and not self._entry_points_loaded:
            self._entry_points_loaded = True
            self.load_entry_points()

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> list[str]:
        """Register providers that installed packages declare.

        An entry point named ``"kind.name"`` points at a provider class; one whose target is
        a plain function is called with this registry and registers what it likes. A broken
        entry point is logged and skipped: one bad package must not stop every run.
        """
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        loaded = []
        for ep in entry_points:
            origin = f"entry point {ep.name} ({ep.value})"
            try:
                target = ep.load()
                if isinstance(target, type):
                    kind, _, name = ep.name.partition(".")
                    if not name:
                        kind, name = target.kind, ep.name
                    self.register(kind, name, target, origin=origin)
                    loaded.append(f"{kind}.{name}")
                else:
                    target(self)
                    loaded.append(ep.name)
            except Exception:  # noqa: BLE001 - third-party code, reported and skipped
                log.exception("could not load APT provider entry point %s", origin)
        return loaded


registry = Registry.with_builtins(entry_points=True)
