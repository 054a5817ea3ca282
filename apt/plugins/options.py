"""Declared plugin options: one dataclass per plugin, checked when the plugin is created.

A plugin that sets ``Options`` to a dataclass declares every option it reads, once, with
its type and default (ARCHITECTURE.md: "an option nobody declared is an error, never
ignored")::

    @dataclass
    class EarlyStoppingOptions:
        patience: int = 5
        mode: Literal["min", "max"] = "min"

    class EarlyStoppingPlugin(Plugin):
        Options = EarlyStoppingOptions

``Plugin.__init__`` then rejects unknown keys (naming the valid ones, with a "did you mean"
for near misses) and values of the wrong type, and fills ``self.config`` with the defaults,
so guide-style ``self.config.get(...)`` and ``self.options.<name>`` agree. Plugins without
``Options`` (third-party ones written as the guide shows) get their config dict unchanged.
Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["PluginOptionError", "check_options", "describe_options", "option_fields", "type_name"]

_MISSING = dataclasses.MISSING


class PluginOptionError(ValueError):
    """An option a plugin does not declare, or a value of the wrong type."""


def option_fields(options_cls: type) -> dict[str, tuple[Any, Any]]:
    """``name -> (type, default)`` for each field of the ``Options`` dataclass.

    A field without a default is required (its default is ``dataclasses.MISSING``).
    Raises TypeError for a class that is not a dataclass or a field type this module
    cannot check, so a bad declaration fails when it is first used, not silently.
    """
    if not dataclasses.is_dataclass(options_cls) or not isinstance(options_cls, type):
        raise TypeError(f"Options must be a dataclass, got {options_cls!r}")
    hints = typing.get_type_hints(options_cls)
    out = {}
    for f in dataclasses.fields(options_cls):
        tp = hints[f.name]
        type_name(tp)  # raises for a type that cannot be checked
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        out[f.name] = (tp, default)
    return out


def check_options(options_cls: type, config: Mapping[str, Any], *, owner: str) -> dict[str, Any]:
    """The defaults of ``options_cls`` updated with ``config``; raises PluginOptionError.

    ``owner`` names the plugin in the messages (``plugin 'early_stopping'``).
    """
    declared = option_fields(options_cls)
    unknown = sorted(set(config) - set(declared))
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, declared, n=1))
                 else repr(k) for k in unknown]
        raise PluginOptionError(f"{owner}: unknown option{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(hints)}; valid options: {sorted(declared)}")
    values = {}
    for name, (tp, default) in declared.items():
        if name in config:
            value = config[name]
            if not _matches(value, tp):
                raise PluginOptionError(f"{owner}: option {name}={value!r} must be {type_name(tp)}")
            values[name] = float(value) if tp is float and isinstance(value, int) else value
        elif default is _MISSING:
            raise PluginOptionError(f"{owner}: option {name!r} ({type_name(tp)}) is required")
        else:
            values[name] = default
    return values


def describe_options(options_cls: type) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` rows, for ``apt list plugins`` and the docs."""
    return [(name, type_name(tp), None if default is _MISSING else default)
            for name, (tp, default) in option_fields(options_cls).items()]


# -- type checks ----------------------------------------------------------------------------
def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if _is_union(tp):
        return any(_matches(value, a) for a in _args(tp))
    if tp is type(None):
        return value is None
    if typing.get_origin(tp) is Literal:
        return any(value == a and type(value) is type(a) for a in _args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        item = _args(tp)[0] if _args(tp) else Any
        return all(_matches(v, item) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            return False
        key_t, val_t = _args(tp) or (Any, Any)
        return all(_matches(k, key_t) and _matches(v, val_t) for k, v in value.items())
    raise TypeError(f"cannot check option type {tp!r}")


def type_name(tp: Any) -> str:
    """A readable name of an option type: ``int | None`` -> ``an integer or null``."""
    if tp is Any:
        return "any value"
    if _is_union(tp):
        return " or ".join(type_name(a) for a in _args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in _args(tp))
    if tp in (bool, int, float, str):
        return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[tp]
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        item = _args(tp)[0] if _args(tp) else Any
        return f"a list ({type_name(item)} each)" if item is not Any else "a list"
    if origin is dict:
        return "a mapping"
    raise TypeError(f"cannot check option type {tp!r}; use bool, int, float, str, Literal, "
                    "list, dict, Any or a union of them")
