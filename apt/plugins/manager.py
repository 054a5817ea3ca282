"""PluginManager: find plugin classes by name, load, check, set up, fire events, tear down.

Names resolve in this order: classes given to :meth:`PluginManager.register_plugin`, the
built-in catalog (:data:`apt.plugins.builtin.BUILTIN_PLUGINS`, imported lazily), and the
``apt.plugins`` entry points of installed packages. Everything that can be checked without
running (unknown names, name mismatches, configs, package requirements, conflicts) fails
at load time; ``plugin:`` dependencies and their order are checked by :meth:`setup_all`,
once every plugin of the run has been loaded.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from apt.plugins.base import Plugin, _as_dict
from apt.plugins.hooks import DisabledHook, HookManager, hook_manager
from apt.plugins.options import PluginOptionError

if TYPE_CHECKING:
    from apt.core.registry import Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginConfigError",
    "PluginConflictError",
    "PluginDependencyError",
    "PluginError",
    "PluginManager",
    "PluginNameError",
    "PluginNotFoundError",
    "plugin_manager",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "apt.plugins"


class PluginError(Exception):
    """Base of every plugin-system error."""


class PluginNotFoundError(PluginError, LookupError):
    """A plugin name that is neither registered, built in, nor an entry point."""


class PluginNameError(PluginError, ValueError):
    """A plugin registered or loaded under a name other than its ``get_name()``."""


class PluginConfigError(PluginError, ValueError):
    """A plugin rejected its config (``validate_config`` returned False or raised)."""


class PluginDependencyError(PluginError):
    """A missing plugin or package requirement, or a dependency cycle."""


class PluginConflictError(PluginError):
    """Two plugins that declare a conflict are loaded together."""


def _plugin_dep(entry: str) -> str | None:
    return entry.split(":", 1)[1].strip() if entry.startswith("plugin:") else None


def _hint(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_requirement(requirement: str) -> str | None:
    """Why a package requirement such as ``"torch>=1.9.0"`` is not met, or None when it is."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement as exc:
        return f"invalid requirement {requirement!r}: {exc}"
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return f"requires {requirement!r} but {req.name!r} is not installed"
    if req.specifier and not req.specifier.contains(installed, prereleases=True):
        return f"requires {requirement!r} but {req.name} {installed} is installed"
    return None


class PluginManager:
    """Loads plugins and runs their lifecycle against one registry and one hook manager.

    ``PluginManager()`` builds its own registry (with built-in providers) and hook
    manager, so instances share no state; the module-level :data:`plugin_manager` uses
    the default :data:`apt.core.registry` and :data:`apt.plugins.hook_manager`.
    """

    def __init__(self, registry: Registry | None = None, hook_manager: HookManager | None = None,
                 *, entry_points: bool = True) -> None:
        if registry is None:
            from apt.core.registry import Registry

            registry = Registry.with_builtins(entry_points=True)
        self.registry = registry
        self.hook_manager = hook_manager if hook_manager is not None else HookManager()
        self._classes: dict[str, type[Plugin]] = {}
        self._entry_points: dict[str, metadata.EntryPoint] = {}
        self._want_entry_points = entry_points
        self._plugins: dict[str, Plugin] = {}
        self._set_up: list[str] = []

    # -- classes ------------------------------------------------------------------------
    def register_plugin(self, name: str, cls: type[Plugin], *, override: bool = False) -> None:
        """Make ``cls`` loadable as ``name``; a taken name needs ``override=True``."""
        if not isinstance(cls, type) or not issubclass(cls, Plugin):
            raise TypeError(f"plugin {name!r} must be a subclass of apt.plugins.Plugin, got {cls!r}")
        old = self._classes.get(name)
        if not override and old is not None and old is not cls:
            raise PluginError(f"plugin name {name!r} is already registered to {old.__qualname__}; "
                              f"pass override=True to replace it with {cls.__qualname__}")
        if not override and old is None and name in self._builtin_catalog():
            raise PluginError(f"plugin name {name!r} is a built-in plugin; pass override=True "
                              f"to replace it with {cls.__qualname__}")
        self._classes[name] = cls

    def unregister_plugin(self, name: str) -> None:
        """Forget a registered class (unloading the plugin first when it is loaded)."""
        if name in self._plugins:
            self.unload_plugin(name)
        self._classes.pop(name, None)

    def available_plugins(self) -> list[str]:
        """Every loadable name: registered, built-in and entry-point plugins."""
        self._maybe_load_entry_points()
        return sorted(set(self._classes) | set(self._builtin_catalog()) | set(self._entry_points))

    def get_plugin_class(self, name: str) -> type[Plugin]:
        if name in self._classes:
            return self._classes[name]
        cls = self.trusted_class(name)
        if cls is not None:
            return cls
        available = self.available_plugins()
        raise PluginNotFoundError(f"unknown plugin {name!r}{_hint(name, available)}; available: {available}")

    def trusted_class(self, name: str) -> type[Plugin] | None:
        """The class of a built-in or entry-point plugin ``name`` (never a registered one), or None.

        The only plugin code a checkpoint may lead to when it is loaded for sampling: classes
        APT ships or an installed package declares, not a ``_target_`` the checkpoint names.
        """
        target = self._builtin_catalog().get(name)
        if target is not None:
            return self._import(name, target, "built-in")
        self._maybe_load_entry_points()
        ep = self._entry_points.get(name)
        if ep is None:
            return None
        try:
            cls = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {name!r} from entry point {ep.value!r} cannot be imported: {exc}") from exc
        return self._check_class(name, cls, f"entry point {ep.value!r}")

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> list[str]:
        """Note the plugins installed packages declare (imported only when loaded)."""
        self._want_entry_points = False
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        found = []
        for ep in entry_points:
            self._entry_points[ep.name] = ep
            found.append(ep.name)
        return found

    # -- loading ------------------------------------------------------------------------
    def load_plugin(self, name: str, config: Mapping[str, Any] | None = None) -> Plugin:
        """Instantiate plugin ``name`` with ``config`` (``{}`` when None) and check it."""
        if name in self._plugins:
            raise PluginError(f"plugin {name!r} is already loaded; unload_plugin({name!r}) first")
        cls = self.get_plugin_class(name)
        cfg = _as_dict(config)
        try:
            plugin = cls(cfg)
        except PluginOptionError as exc:
            raise PluginConfigError(str(exc)) from None
        except Exception as exc:
            raise PluginConfigError(f"plugin {name!r} could not be created from config {cfg}: {exc}") from exc
        if "config" not in vars(plugin):
            plugin.config = cfg
        if type(plugin).get_name is Plugin.get_name:
            plugin._apt_name = name
        actual = plugin.get_name()
        if actual != name:
            raise PluginNameError(f"plugin class {cls.__qualname__} registered as {name!r} "
                                  f"reports get_name() == {actual!r}; the two must match")
        self._validate(name, plugin)
        problems = [p for dep in plugin.get_dependencies() if _plugin_dep(dep) is None
                    for p in [check_requirement(dep)] if p]
        if problems:
            raise PluginDependencyError(f"plugin {name!r}: " + "; ".join(problems))
        for other in self._plugins.values():
            self._check_conflict(plugin, other)
        self._plugins[name] = plugin
        return plugin

    def load_from_config(self, config: Any) -> list[Plugin]:
        """Load the plugins a config names: ``plugins: [a, b]`` plus a section per plugin.

        ``config`` is an :class:`~apt.core.APTConfig`, a dict or an OmegaConf node. Each
        plugin's config is its top-level section (``a: {...}``). ``plugins`` may also map
        names to configs. All names are checked before any is loaded, and a failure
        unloads what this call loaded.
        """
        data = _as_dict(config)
        entries = data.get("plugins") or []
        if isinstance(entries, str):
            entries = [entries]
        if isinstance(entries, Mapping):
            entries = [{k: v} for k, v in entries.items()]
        wanted: list[tuple[str, dict[str, Any]]] = []
        for entry in entries:
            if isinstance(entry, Mapping):
                wanted += [(str(k), _as_dict(v)) for k, v in entry.items()]
            elif isinstance(entry, str):
                section = data.get(entry)
                wanted.append((entry, _as_dict(section) if isinstance(section, Mapping) else {}))
            else:
                raise PluginError(f"plugins entries must be names or {{name: config}}, got {entry!r}")
        for name, _ in wanted:
            self.get_plugin_class(name)
        loaded: list[Plugin] = []
        try:
            for name, cfg in wanted:
                loaded.append(self.load_plugin(name, cfg))
        except Exception:
            for plugin in loaded:
                self._plugins.pop(plugin.get_name(), None)
            raise
        return loaded

    def unload_plugin(self, name: str) -> None:
        """Tear down (when set up) and forget a loaded plugin."""
        plugin = self._loaded(name)
        if name in self._set_up:
            self._teardown(name, plugin)
        del self._plugins[name]

    # -- lifecycle ----------------------------------------------------------------------
    def check_dependencies(self) -> list[str]:
        """The order ``setup_all`` would set up the pending plugins in; raises on problems."""
        for name, plugin in self._plugins.items():
            for dep in plugin.get_dependencies():
                target = _plugin_dep(dep)
                if target is not None and target not in self._plugins:
                    raise PluginDependencyError(
                        f"plugin {name!r} depends on plugin {target!r}, which is not loaded; "
                        f"loaded: {sorted(self._plugins)}; available: {self.available_plugins()}")
        pending = [n for n in self._plugins if n not in self._set_up]
        deps = {n: {d for d in map(_plugin_dep, self._plugins[n].get_dependencies())
                    if d is not None and d in pending} for n in pending}
        rank = {n: (-self._plugins[n].get_priority(), i) for i, n in enumerate(pending)}
        order: list[str] = []
        while len(order) < len(pending):
            ready = [n for n in pending if n not in order and deps[n] <= set(order)]
            if not ready:
                raise PluginDependencyError(f"plugin dependency cycle: {' -> '.join(self._cycle(deps, order))}")
            order.append(min(ready, key=rank.__getitem__))
        return order

    def setup_all(self) -> list[str]:
        """Set up the loaded plugins not set up yet, dependencies first; returns their names."""
        order = self.check_dependencies()
        for name in order:
            plugin = self._plugins[name]
            hm = self.hook_manager
            try:
                with hm.owned_by(plugin):
                    plugin.setup(self.registry, hm)  # Plugin.setup registers the on_* methods...
                    if getattr(plugin, "hook_manager", None) is not hm:  # ...unless it was skipped
                        hm.register_plugin_hooks(plugin)
            except Exception as exc:
                hm.unregister_owner(plugin)
                raise PluginError(f"setup of plugin {name!r} failed: {exc}") from exc
            self._set_up.append(name)
        return order

    def teardown_all(self) -> None:
        """Tear down every set-up plugin, last set up first; plugins stay loaded."""
        for name in reversed(list(self._set_up)):
            self._teardown(name, self._plugins[name])

    def reset(self) -> None:
        """Tear down and unload everything and forget registered classes (tests, notebooks)."""
        self.teardown_all()
        self._plugins.clear()
        self._classes.clear()

    def trigger_event(self, event: str, **kwargs: Any) -> list[Any]:
        """Fire ``event``: run its hooks with ``kwargs`` and return their results."""
        return self.hook_manager.trigger(event, **kwargs)

    # -- access -------------------------------------------------------------------------
    def get_plugin(self, name: str) -> Plugin | None:
        """The loaded plugin ``name``, or None when it is not loaded."""
        return self._plugins.get(name)

    def list_plugins(self) -> list[str]:
        """Loaded plugin names in load order."""
        return list(self._plugins)

    def is_set_up(self, name: str) -> bool:
        return name in self._set_up

    def enable_plugin(self, name: str) -> None:
        self._loaded(name).enable()

    def disable_plugin(self, name: str) -> None:
        self._loaded(name).disable()

    def with_capability(self, capability: str) -> list[Plugin]:
        """The loaded plugins that declare ``capability`` (see :data:`apt.plugins.base.CAPABILITIES`)."""
        from apt.plugins.base import CAPABILITIES

        if capability not in CAPABILITIES:
            raise ValueError(f"unknown plugin capability {capability!r}; known: {sorted(CAPABILITIES)}")
        return [p for p in self._plugins.values() if capability in type(p).capabilities]

    @property
    def should_stop(self) -> bool:
        """True when an enabled loaded plugin asked training to stop."""
        return any(p.should_stop and p.is_enabled() for p in self._plugins.values())

    def disabled_hooks(self) -> list[DisabledHook]:
        """Hooks disabled by repeated failures, with their plugin's first error; the trainer
        fails the run or names them in its summary (``trainer.on_plugin_error``)."""
        return self.hook_manager.disabled_hooks()

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: plugin.state_dict()}`` of the loaded plugins, for checkpoints."""
        return {n: p.state_dict() for n, p in self._plugins.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore plugin state; entries for plugins not loaded now are skipped with a warning."""
        for name, entry in state.items():
            plugin = self._plugins.get(name)
            if plugin is None:
                log.warning("checkpoint has state for plugin %r, which is not loaded (loaded: %s)",
                            name, sorted(self._plugins))
                continue
            plugin.load_state_dict(entry)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __repr__(self) -> str:
        return f"PluginManager(loaded={self.list_plugins()}, set_up={self._set_up})"

    # -- internals ----------------------------------------------------------------------
    def _loaded(self, name: str) -> Plugin:
        if name not in self._plugins:
            raise PluginNotFoundError(f"plugin {name!r} is not loaded{_hint(name, self._plugins)}; "
                                      f"loaded: {sorted(self._plugins)}")
        return self._plugins[name]

    def _teardown(self, name: str, plugin: Plugin) -> None:
        try:
            plugin.teardown()
        except Exception:  # one plugin's cleanup must not skip the others'
            log.exception("teardown of plugin %r failed", name)
        self.hook_manager.unregister_owner(plugin)
        self._set_up.remove(name)

    @staticmethod
    def _validate(name: str, plugin: Plugin) -> None:
        try:
            ok = plugin.validate_config()
        except (ValueError, TypeError, KeyError) as exc:
            raise PluginConfigError(f"plugin {name!r} rejected its config {plugin.config}: {exc}") from exc
        if ok is False:
            raise PluginConfigError(f"plugin {name!r} rejected its config {plugin.config} "
                                    "(validate_config returned False; see the log for why)")

    @staticmethod
    def _check_conflict(new: Plugin, old: Plugin) -> None:
        a, b = new.get_name(), old.get_name()
        def names(p: Plugin) -> set[str]:
            return {c.removeprefix("plugin:") for c in p.get_conflicts()}
        if b in names(new) or a in names(old):
            raise PluginConflictError(f"plugins {a!r} and {b!r} conflict and cannot be loaded together")

    @staticmethod
    def _cycle(deps: Mapping[str, set[str]], done: list[str]) -> list[str]:
        start = next(n for n in deps if n not in done)
        path = [start]
        while True:
            nxt = sorted(d for d in deps[path[-1]] if d not in done)[0]
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            path.append(nxt)

    @staticmethod
    def _builtin_catalog() -> Mapping[str, str]:
        from apt.plugins.builtin import BUILTIN_PLUGINS

        return BUILTIN_PLUGINS

    def _import(self, name: str, target: str, origin: str) -> type[Plugin]:
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"{origin} plugin {name!r} points at {target!r}, which cannot be imported: {exc}") from exc
        return self._check_class(name, cls, target)

    @staticmethod
    def _check_class(name: str, cls: Any, where: str) -> type[Plugin]:
        if not isinstance(cls, type) or not issubclass(cls, Plugin):
            raise PluginError(f"plugin {name!r} ({where}) is not a subclass of apt.plugins.Plugin: {cls!r}")
        return cls

    def _maybe_load_entry_points(self) -> None:
        if self._want_entry_points:
            try:
                self.load_entry_points()
            except Exception:  # a broken environment must not hide the built-ins
                log.exception("could not read %r entry points", ENTRY_POINT_GROUP)


def _default() -> PluginManager:
    from apt.core.registry import registry

    return PluginManager(registry=registry, hook_manager=hook_manager)


#: The default manager: the default provider registry and hook manager.
plugin_manager = _default()
