"""Does ``_target_: pkg.mod.Name`` exist? Answered from the source, without importing ``pkg``.

The optimizer's ``_target_`` (``torch.optim.AdamW``) must be checked while torch stays
unimported, so the module file is located with :func:`importlib.util.find_spec` of the
top-level package (which does not import it), the submodules are followed on disk, and the
last module's source is read with :mod:`ast` for the names it defines or imports. Where
the source cannot tell (an extension module, ``from x import *``, a module ``__getattr__``)
the answer is "unknown" and the target is imported when the run is built. A module that is
already imported is asked directly (its attributes may be set at run time).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from apt.core.errors import did_you_mean

__all__ = ["target_keywords", "target_problem"]

#: Hydra's own keys of a ``_target_`` node, never passed to the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_convert_", "_recursive_"})


def target_problem(target: str) -> str | None:
    """Why ``target`` (``"a.b.C"`` or ``"a.b:C"``) cannot be found, or None (found, or unknown)."""
    module_path, _, attr = target.partition(":")
    parts = module_path.split(".") + ([attr] if attr else [])
    if not all(parts):
        return f"{target!r} is not a dotted path such as torch.optim.AdamW"
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"{target!r}: no module named {parts[0]!r}"
    origin = Path(spec.origin) if spec.origin and spec.origin not in ("built-in", "frozen") else None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    for i, part in enumerate(parts[1:], start=1):
        found = _submodule(locations, part)
        if found is not None:
            origin, locations = found
            continue
        module = sys.modules.get(".".join(parts[:i]))
        names = set(dir(module)) if module is not None else _defined_names(origin)
        if names is None or part in names:
            return None
        where = ".".join(parts[:i])
        public = sorted(n for n in names if not n.startswith("_"))
        return f"{target!r}: module {where!r} has no {part!r}{did_you_mean(part, public)}"
    return None  # the target is a module


def target_keywords(target: str) -> tuple[str, ...] | None:
    """The keyword arguments class ``target`` takes after its first (``params``), from its source.

    Follows ``from x import Name`` re-exports (``torch.optim.Muon`` is defined in
    ``torch.optim._muon``). None where the source cannot tell: not a class defined in Python
    source, an inherited ``__init__``, or an ``__init__`` that takes ``**kwargs``.
    """
    module, _, name = target.replace(":", ".").rpartition(".")
    for _ in range(4):  # re-export hops
        tree = _parse(_module_file(module))
        if tree is None:
            return None
        found = _find(tree.body, name)
        if isinstance(found, ast.ClassDef):
            return _init_keywords(found)
        if not isinstance(found, ast.ImportFrom) or found.level or not found.module:
            return None
        module = found.module
        name = next(a.name for a in found.names if (a.asname or a.name) == name)
    return None


def _module_file(module: str) -> Path | None:
    """The source file of dotted ``module``, found on disk without importing it."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    origin, locations = Path(spec.origin), [Path(p) for p in (spec.submodule_search_locations or [])]
    for part in parts[1:]:
        found = _submodule(locations, part)
        if found is None:
            return None
        origin, locations = found
    return origin


def _parse(origin: Path | None) -> ast.Module | None:
    if origin is None or origin.suffix != ".py":
        return None
    try:
        return ast.parse(origin.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _find(body: list[ast.stmt], name: str) -> ast.ClassDef | ast.ImportFrom | None:
    """The top-level class ``name`` of a module, or the ``from ... import`` that binds it."""
    for node in body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return node
    return None


def _init_keywords(cls: ast.ClassDef) -> tuple[str, ...] | None:
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None or init.args.kwarg is not None:
        return None
    positional = [a.arg for a in (*init.args.posonlyargs, *init.args.args)][2:]  # self, params
    return tuple(positional + [a.arg for a in init.args.kwonlyargs])


def _submodule(locations: list[Path], name: str) -> tuple[Path, list[Path]] | None:
    for loc in locations:
        if (loc / name / "__init__.py").is_file():
            return loc / name / "__init__.py", [loc / name]
        if (loc / f"{name}.py").is_file():
            return loc / f"{name}.py", []
        if (loc / name).is_dir():  # a namespace package
            return loc / name, [loc / name]
    return None


def _defined_names(origin: Path | None) -> set[str] | None:
    """Top-level names a module's source binds, or None when the source cannot tell."""
    tree = _parse(origin)
    return None if tree is None else _bound(tree.body)


def _bound(body: list[ast.stmt]) -> set[str] | None:
    """Names ``body`` binds (every branch of an ``if``/``try`` counts); None if it cannot tell."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.If | ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                inner = _bound(block)
                if inner is None:
                    return None
                names |= inner
    return names
