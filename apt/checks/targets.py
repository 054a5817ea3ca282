"""Does ``_target_: pkg.mod.Name`` exist, and is it the kind of class it must be? Answered from
the source where it can be, without importing ``pkg``; nothing a target names is ever called.

The optimizer's ``_target_`` (``torch.optim.AdamW``) must be checked while torch stays
unimported, so the module file is located with :func:`importlib.util.find_spec` of the
top-level package (which does not import it), the submodules are followed on disk, and the
last module's source is read with :mod:`ast` for the names it defines or imports. Where
the source cannot tell (an extension module, ``from x import *``, a module ``__getattr__``)
the answer is "unknown" and the target is imported when the run is built. A module that is
already imported is asked directly (its attributes may be set at run time).

:func:`class_problem` checks that a target is a subclass of a given base (an optimizer
target a ``torch.optim.Optimizer``) before anything calls it: from the source, following
re-exports and base classes, where the source tells; otherwise by importing the target's
module (importing is allowed, calling is not) and looking at the object.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

from apt.core.errors import describe, did_you_mean

__all__ = ["CALLBACK_BASE", "base_definition", "callback_problems", "class_problem", "definition", "target_keywords",
           "target_problem"]

#: Hydra's own keys of a ``_target_`` node, never passed to the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_convert_", "_recursive_"})


#: The class every ``hydra.callbacks.<name>._target_`` derives from (Hydra creates them before the run).
CALLBACK_BASE = "hydra.experimental.callback:Callback"


def callback_problems(callbacks: Any) -> list[str]:
    """Problems of the ``hydra.callbacks`` mapping: each ``_target_`` found and a Hydra callback
    class, checked before Hydra instantiates it (at the start of train.py's job)."""
    problems = []
    for name, node in (callbacks or {}).items():
        target = node.get("_target_") if hasattr(node, "get") else None
        if not isinstance(target, str) or not target:
            problems.append(f"hydra.callbacks.{name} needs a _target_ (a subclass of "
                            "hydra.experimental.callback.Callback)")
            continue
        problem = target_problem(target) or class_problem(
            target, CALLBACK_BASE, "a Hydra callback class (a subclass of hydra.experimental.callback.Callback)")
        if problem:
            problems.append(f"hydra.callbacks.{name}._target_={problem}")
    return problems


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
    found = definition(module, name)
    return _init_keywords(found[1]) if found is not None and isinstance(found[1], ast.ClassDef) else None


def class_problem(target: str, base: str, expected: str) -> str | None:
    """Why ``target`` is not a subclass of ``base`` (``"module:Class"``, where it is defined), or None.

    ``expected`` names what it must be, for the message (``"an optimizer class (a subclass of
    torch.optim.Optimizer)"``). Read from the source where it tells; otherwise the target's
    module is imported and the object looked at. Nothing is called.
    """
    module, _, name = target.replace(":", ".").rpartition(".")
    if not module:
        return f"{target!r} is the module {target}, not {expected}"
    static = _subclass(definition(module, name), base, 0)
    if static is True:
        return None
    if isinstance(static, str):
        return f"{target!r} is {static}, not {expected}"
    from apt.checks.plugins import import_target

    try:
        obj = import_target(target)
    except Exception as exc:  # noqa: BLE001 - a user's module: whatever it raises is the answer
        return f"{target!r} cannot be imported: {type(exc).__name__}: {exc}"
    if isinstance(obj, type) and any(f"{c.__module__}:{c.__qualname__}" == base for c in obj.__mro__):
        return None
    return f"{target!r} is {describe(obj)}, not {expected}"


def definition(module: str, name: str) -> tuple[str, ast.stmt] | None:
    """``(module, node)``: the one top-level ``class``/``def`` that binds ``name`` in ``module``,
    following ``from x import name`` re-exports (relative ones too); ``(module.name, Import)``
    for a submodule. None where the source cannot tell (no source, a name bound twice, in a
    branch, by assignment or by a decorated definition)."""
    for _ in range(8):  # re-export hops
        origin = _module_file(module)
        tree = _parse(origin)
        if tree is None:
            return None
        found = _binding(tree, name)
        if found is None:
            sub = f"{module}.{name}"
            return (sub, ast.Import(names=[ast.alias(name=sub)])) if _module_file(sub) is not None else None
        if not isinstance(found, ast.ImportFrom):
            return module, found
        package = module if origin is not None and origin.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(found.level - 1):
            package = package.rpartition(".")[0]
        source = found.module if not found.level else ".".join(p for p in (package, found.module) if p)
        if not source:
            return None
        module = source
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
        st = origin.stat()
    except OSError:
        return None
    return _parse_file(str(origin), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parse_file(path: str, size: int, mtime_ns: int) -> ast.Module | None:
    """A module's syntax tree, parsed once per check (keyed by size and mtime, as files change)."""
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _binding(tree: ast.Module, name: str) -> ast.stmt | None:
    """The statement that binds ``name`` at the top level of a module, when it is the only one
    and a plain ``class``, ``def`` or ``from ... import``; None otherwise (assigned, bound in a
    branch, decorated, or the module has a ``*`` import: only running it would tell)."""
    index = _index(tree)
    found = index.get(name, [])
    if "*" in index or len(found) != 1 or found[0] is None:
        return None
    node = found[0]
    return None if getattr(node, "decorator_list", None) or isinstance(node, ast.Import) else node


def _index(tree: ast.Module) -> dict[str, list[ast.stmt | None]]:
    """Name -> the top-level statements that bind it (None: one that binds it otherwise than by
    ``class``/``def``/import); computed once per parsed module."""
    index: dict[str, list[ast.stmt | None]] | None = getattr(tree, "_apt_index", None)
    if index is None:
        index = {}
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                index.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    index.setdefault(alias.asname or alias.name.split(".")[0], []).append(node)
            else:
                for bound in _stored(node):
                    index.setdefault(bound, []).append(None)
        tree._apt_index = index  # type: ignore[attr-defined]
    return index


def _stored(node: ast.AST) -> set[str]:
    """Names statement ``node`` binds outside the bodies of the functions and classes it defines."""
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {a.asname or a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Store) else set()
    return set().union(*(_stored(child) for child in ast.iter_child_nodes(node)))


def _subclass(found: tuple[str, ast.stmt] | None, base: str, depth: int) -> bool | str | None:
    """Whether the definition ``found`` is a class deriving from ``base``: True, what it is
    instead (a line fragment), or None (the source cannot tell)."""
    if found is None or depth > 20:
        return None
    module, node = found
    if isinstance(node, ast.Import):
        return f"the module {module}"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"the function {module}.{node.name}"
    if not isinstance(node, ast.ClassDef):
        return None
    if f"{module}:{node.name}" == base:
        return True
    verdicts = [_subclass(base_definition(module, b), base, depth + 1) for b in node.bases]
    if True in verdicts:
        return True
    if any(v is None for v in verdicts):
        return None
    return f"the class {module}.{node.name}"


def base_definition(module: str, expr: ast.expr) -> tuple[str, ast.stmt] | None:
    """Where the base class ``expr`` (a name, or ``pkg.mod.Name`` of an imported module) of a
    class in ``module`` is defined; None where the source cannot tell."""
    if isinstance(expr, ast.Name):
        if expr.id == "object":
            return module, ast.ClassDef(name="object", bases=[], keywords=[], body=[], decorator_list=[])
        return definition(module, expr.id)
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.insert(0, expr.attr)
        expr = expr.value
    tree = _parse(_module_file(module))
    if not isinstance(expr, ast.Name) or tree is None:
        return None
    for node in tree.body:  # ``import a.b`` / ``import a.b as m``
        for alias in node.names if isinstance(node, ast.Import) else []:
            if alias.asname == expr.id or (alias.asname is None and alias.name.split(".")[0] == expr.id):
                root = alias.name if alias.asname else expr.id
                return definition(".".join([root, *parts[:-1]]), parts[-1])
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
