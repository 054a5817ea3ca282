"""The ``plugin`` section: each plugin created with its options, checked and set up.

A plugin is created from its config (``Plugin.Options`` rejects unknown options and wrong
types, ``validate_config`` the rest), its package requirements and conflicts are checked
as it is loaded, and ``setup_all`` checks ``plugin:`` dependencies and lets each plugin
register its providers and hooks, so a provider a plugin registers can be chosen by name.
Relative ``*_file`` / ``*_dir`` options point into the run directory. A ``monitor`` option
of a plugin that hooks ``on_validation_end`` must name a metric the trainer passes there.

Config format: ``plugin.<name>: {_target_: <Plugin class>, ...options}``. ``_target_`` may
be left out for a plugin the manager knows by name (built-in or entry point); one given is
imported and checked to be a :class:`~apt.plugins.Plugin` subclass before anything calls it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apt.core.errors import describe, did_you_mean

__all__ = ["dotted_target", "import_target", "in_run_dir", "load_plugins", "monitor_problems", "plugin_model_problems",
           "set_up_plugins"]


def dotted_target(target: str) -> str:
    """``pkg.mod.Class`` -> ``pkg.mod:Class`` (the registry's lazy form)."""
    if ":" in target:
        return target
    module, _, attr = target.rpartition(".")
    return f"{module}:{attr}"


def import_target(target: str) -> Any:
    """The object ``target`` names (``pkg.mod.Class``, ``pkg.mod:Class`` or a module); imports
    its module, calls nothing."""
    if "." not in target and ":" not in target:
        return importlib.import_module(target)
    module, _, attr = dotted_target(target).partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def in_run_dir(options: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Relative ``*_file`` / ``*_dir`` plugin options point into the run directory."""
    out = dict(options)
    for key, value in options.items():
        if (key.endswith("_file") or key.endswith("_dir")) and isinstance(value, str) and value \
                and not Path(value).is_absolute():
            out[key] = str(run_dir / value)
    return out


def load_plugins(pm: Any, plugins: Mapping[str, Any]) -> list[str]:
    """Register each ``_target_`` under its name and ``load_plugin`` it; problems as lines."""
    from apt.plugins import Plugin, PluginError

    problems = []
    known: list[str] | None = None
    for name, node in plugins.items():
        if not isinstance(node, Mapping):
            problems.append(f"plugin.{name} must be a mapping of options, got {node!r}")
            continue
        options = {k: v for k, v in node.items() if k != "_target_"}
        target = node.get("_target_")
        try:
            if target:
                try:
                    cls = import_target(str(target))
                except (ImportError, AttributeError, ValueError) as exc:
                    problems.append(f"plugin {name!r}: _target_={target!r} cannot be found ({exc})")
                    continue
                if not (isinstance(cls, type) and issubclass(cls, Plugin)):  # checked before anything calls it
                    problems.append(f"plugin.{name}._target_={target!r} is {describe(cls)}, not a plugin "
                                    "(a subclass of apt.plugins.Plugin)")
                    continue
                if name not in pm.available_plugins():
                    pm.register_plugin(name, cls)
                elif pm.get_plugin_class(name) is not cls:
                    pm.register_plugin(name, cls, override=True)
            else:
                known = known if known is not None else pm.available_plugins()
                if name not in known:
                    problems.append(f"unknown plugin {name!r}{did_you_mean(name, known)}; "
                                    f"available: {', '.join(known)}")
                    continue
            pm.load_plugin(name, options)
        except (PluginError, TypeError, ValueError) as exc:
            problems.append(str(exc) if repr(name) in str(exc) else f"plugin {name!r}: {exc}")
    return problems


def set_up_plugins(pm: Any) -> list[str]:
    """``setup_all`` (dependencies first); a missing dependency or a failing setup as a line."""
    from apt.plugins import PluginError

    try:
        pm.setup_all()
    except PluginError as exc:
        return [str(exc)]
    return []


def monitor_problems(pm: Any) -> list[str]:
    """Plugins watching a validation metric the trainer never produces (``monitor=val_acc``):
    a plugin that overrides ``on_validation_end`` and declares a ``monitor`` option reads that
    key of the metrics, which are :data:`~apt.training.evaluation.VALIDATION_METRICS`."""
    from apt.plugins import Plugin
    from apt.training.evaluation import VALIDATION_METRICS

    problems = []
    for name in pm.list_plugins():
        plugin = pm.get_plugin(name)
        monitor = getattr(getattr(plugin, "options", None), "monitor", None)
        if monitor is None or type(plugin).on_validation_end is Plugin.on_validation_end:
            continue
        if monitor not in VALIDATION_METRICS:
            problems.append(f"plugin {name!r}: monitor={monitor!r} is not a validation metric"
                            f"{did_you_mean(str(monitor), VALIDATION_METRICS)}; valid: {', '.join(VALIDATION_METRICS)}")
    return problems


def plugin_model_problems(pm: Any, model: Mapping[str, Any]) -> list[str]:
    """Each loaded plugin's :meth:`~apt.plugins.Plugin.check_model` lines (a block index the
    model does not have), prefixed with the plugin's name where the line lacks it."""
    problems = []
    for name in pm.list_plugins():
        for line in pm.get_plugin(name).check_model(model):
            problems.append(line if repr(name) in line else f"plugin {name!r}: {line}")
    return problems
