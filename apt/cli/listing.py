"""``apt list providers`` and ``apt list plugins``: what can be selected, and from where.

Listing must stay fast and torch-free, yet a plugin's version and description are methods
of classes whose modules may import torch (MoE, align). So the metadata is read from the
source with :mod:`ast` when the method just returns a string literal, which is how
plugins usually write them; only a computed value makes us import the class.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from apt.plugins.base import docstring_summary

__all__ = ["PluginInfo", "ProviderInfo", "format_table", "plugin_infos", "provider_infos"]

_BASE_VERSION = "0.0.0"  # Plugin.get_version's default


@dataclass(frozen=True)
class ProviderInfo:
    kind: str
    name: str
    default: bool
    origin: str
    target: str
    description: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    origin: str
    target: str
    description: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Left-aligned text columns, header first; the last column is not padded."""
    cells = [columns] + [["" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        parts = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# -- static reading of class source ------------------------------------------------------------
def _class_def(module: str, cls_name: str) -> tuple[ast.ClassDef | None, ast.Module | None]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None, None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None, None
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None, None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            return node, tree
    return None, tree


_DYNAMIC = object()


def _method_literal(cls: ast.ClassDef, tree: ast.Module, method: str) -> Any:
    """The string ``method`` returns, ``None`` if not defined here, ``_DYNAMIC`` if computed.

    Base classes defined in the same module are followed, so a family of plugins sharing
    one ``get_version`` still reads statically.
    """
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == method:
            body = [s for s in node.body
                    if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            if (len(body) == 1 and isinstance(body[0], ast.Return)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                return body[0].value.value
            return _DYNAMIC
    local = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in local and base.id != cls.name:
            found = _method_literal(local[base.id], tree, method)
            if found is not None:
                return found
    return None


def _import_target(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _call_unbound(target: str, method: str) -> str:
    """Last resort for a computed value: import the class, call on an uninitialised instance."""
    try:
        cls = _import_target(target)
        return str(getattr(cls, method)(object.__new__(cls)))
    except Exception as exc:  # noqa: BLE001 - a listing shows what it can
        return f"? ({type(exc).__name__})"


def _static_plugin_meta(target: str) -> tuple[str, str]:
    """(version, description) of the plugin class at ``module:Class`` without importing it."""
    module, _, cls_name = target.partition(":")
    cls, tree = _class_def(module, cls_name)
    if cls is None or tree is None:
        return _call_unbound(target, "get_version"), _call_unbound(target, "get_description")
    version = _method_literal(cls, tree, "get_version")
    if version is None:
        version = _BASE_VERSION
    elif version is _DYNAMIC:
        version = _call_unbound(target, "get_version")
    desc = _method_literal(cls, tree, "get_description")
    if desc is None:  # the base returns the first line of the class docstring
        desc = docstring_summary(ast.get_docstring(cls))
    elif desc is _DYNAMIC:
        desc = _call_unbound(target, "get_description")
    return version, desc


def _dotted(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"{obj.__module__}:{obj.__qualname__}"


def _ep_origin(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"entry point ({dist.metadata['Name']} {dist.version})"
    return "entry point"


# -- listings ----------------------------------------------------------------------------------
def provider_infos(kind: str | None = None) -> list[ProviderInfo]:
    """Every registered provider (built-in and entry point), sorted by kind and name."""
    from apt.core.registry import registry

    out = []
    for k in registry.kinds():
        if kind is not None and k != kind:
            continue
        default = registry.default_name(k) if registry.names(k) else None
        for name in registry.names(k):
            spec = registry.spec(k, name)
            target = _dotted(spec.target)
            if isinstance(spec.target, str):
                cls_node, _ = _class_def(*target.split(":", 1))
                desc = docstring_summary(ast.get_docstring(cls_node)) if cls_node else ""
            else:
                desc = docstring_summary(spec.target.__doc__)
            out.append(ProviderInfo(k, name, name == default, spec.origin, target, desc))
    return out


def plugin_infos() -> list[PluginInfo]:
    """Every plugin a run can name: built-in ones and those installed packages declare."""
    from apt.plugins.builtin import BUILTIN_PLUGINS
    from apt.plugins.manager import ENTRY_POINT_GROUP

    out: dict[str, PluginInfo] = {}
    for name, target in sorted(BUILTIN_PLUGINS.items()):
        version, desc = _static_plugin_meta(target)
        out[name] = PluginInfo(name, version, "built-in", target, desc)
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in out:
            continue  # the manager prefers the built-in of the same name
        version, desc = _static_plugin_meta(ep.value)
        out[ep.name] = PluginInfo(ep.name, version, _ep_origin(ep), ep.value, desc)
    return sorted(out.values(), key=lambda p: p.name)
