"""What a class's constructor would refuse, read from its source without running it.

An optimizer refuses some values only when it is built (``torch.optim.SGD`` with
``nesterov=True`` and ``momentum=0``); the run builds it after the data and the model, and
the config check must not import torch, let alone call the class. :func:`constructor_problem`
reads ``__init__`` with :mod:`ast` and follows its argument checks, the ``if <condition>:
raise ...`` statements, with the configured values (the signature's defaults for the rest),
into ``super().__init__(...)`` as well, and returns the message of the first ``raise`` they
reach. Conditions are evaluated on plain config values only (numbers, strings, lists):
anything else (a call other than ``isinstance``/``len``, an attribute, a name assigned on
the way) is unknown, and a statement whose condition is unknown is skipped, so the answer
is either what the constructor would say or nothing.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

from apt.checks.targets import base_definition, definition

__all__ = ["constructor_problem"]


class _Unknown:
    """A value the source alone cannot give."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}
#: Classes no config value is an instance of (config values are plain data).
_NEVER = frozenset({"Tensor"})


def constructor_problem(target: str, options: Mapping[str, Any], *, unknown: tuple[str, ...] = ()) -> str | None:
    """The message ``target(<first argument>, **options)`` would raise, or None.

    ``unknown`` names arguments whose value is decided later (``fused``, chosen by device).
    None also where the source cannot tell: no source, no ``__init__``, a condition that
    needs more than the values.
    """
    module, _, name = target.replace(":", ".").rpartition(".")
    found = definition(module, name) if module else None
    if found is None or not isinstance(found[1], ast.ClassDef):
        return None
    env = _bind(found, None, {k: v for k, v in options.items() if not k.startswith("_")}, unknown)
    return None if env is None else _run(found, env, 0)


def _init(cls: ast.ClassDef) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)


def _bind(found: tuple[str, ast.ClassDef], args: list[Any] | None, kwargs: Mapping[str, Any],
          unknown: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of ``__init__``'s parameters for a call with ``args`` after the first (None:
    only the first, ``params``) and ``kwargs``; None when the call does not bind."""
    init = _init(found[1])
    if init is None:
        return None
    a = init.args
    positional = [*a.posonlyargs, *a.args][1:]  # self
    defaults = dict(zip([p.arg for p in positional][len(positional) - len(a.defaults):], a.defaults, strict=True))
    defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None})
    given = list(args) if args is not None else [UNKNOWN]
    if len(given) > len(positional) and a.vararg is None:
        return None
    env: dict[str, Any] = {p.arg: v for p, v in zip(positional, given, strict=False)}
    for key, value in kwargs.items():
        if key in env or key not in {p.arg for p in [*positional, *a.kwonlyargs]}:
            if a.kwarg is None:
                return None
            continue
        env[key] = value
    for p in [*positional, *a.kwonlyargs]:
        if p.arg not in env:
            env[p.arg] = _Eval({}).value(defaults[p.arg]) if p.arg in defaults else UNKNOWN
    for key in unknown:
        if key in env and key not in kwargs:
            env[key] = UNKNOWN
    if a.vararg is not None:
        env[a.vararg.arg] = UNKNOWN
    if a.kwarg is not None:
        env[a.kwarg.arg] = UNKNOWN
    return env


def _run(found: tuple[str, ast.ClassDef], env: dict[str, Any], depth: int) -> str | None:
    """Follow ``__init__``'s statements with ``env``; the message of the first ``raise`` reached."""
    init = _init(found[1])
    return None if init is None or depth > 8 else _block(init.body, _Eval(env), found, depth)


def _block(body: list[ast.stmt], ev: _Eval, found: tuple[str, ast.ClassDef], depth: int) -> str | None:
    for stmt in body:
        if isinstance(stmt, ast.If):
            test = ev.value(stmt.test)
            if test is UNKNOWN:
                if _returns(stmt):
                    return None  # what follows may never run
                ev.forget(stmt)
                continue
            problem = _block(stmt.body if test else stmt.orelse, ev, found, depth)
            if problem is not None:
                return problem
        elif isinstance(stmt, ast.Raise):
            return ev.message(stmt.exc)
        elif isinstance(stmt, ast.Return):
            return None
        elif isinstance(stmt, ast.Expr) and _is_super_init(stmt.value):
            call = stmt.value
            assert isinstance(call, ast.Call)
            if any(isinstance(x, ast.Starred) for x in call.args) or any(k.arg is None for k in call.keywords):
                continue
            parent = _parent(found)
            if parent is None:
                continue
            env = _bind(parent, [ev.value(x) for x in call.args],
                        {k.arg: ev.value(k.value) for k in call.keywords if k.arg}, ())
            problem = _run(parent, env, depth + 1) if call.args and env is not None else None
            if problem is not None:
                return problem
        elif _returns(stmt):
            return None
        else:
            ev.forget(stmt)
    return None


def _returns(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Return) for n in ast.walk(stmt))


def _is_super_init(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__"
            and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "super")


def _parent(found: tuple[str, ast.ClassDef]) -> tuple[str, ast.ClassDef] | None:
    """The class ``super().__init__`` calls: the first base, where it is found in the source."""
    module, cls = found
    if not cls.bases:
        return None
    parent = base_definition(module, cls.bases[0])
    if parent is None or not isinstance(parent[1], ast.ClassDef):
        return None
    return parent[0], parent[1]


class _Eval:
    """Evaluates expressions over plain values; UNKNOWN where that is not enough."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def forget(self, stmt: ast.stmt) -> None:
        """Names ``stmt`` may assign are unknown from here on."""
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                self.env[node.id] = UNKNOWN

    def value(self, node: ast.expr) -> Any:
        try:
            return self._value(node)
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError):
            return UNKNOWN

    def message(self, exc: ast.expr | None) -> str | None:
        """The text of ``raise E("...")``; the exception's name where its text is not a plain string."""
        if isinstance(exc, ast.Call) and exc.args:
            text = self.value(exc.args[0])
            if isinstance(text, str) and text:
                return text
        name = exc.func if isinstance(exc, ast.Call) else exc
        return f"its constructor raises {name.id}" if isinstance(name, ast.Name) else None

    def _value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.env.get(node.id, UNKNOWN)
        if isinstance(node, ast.Tuple | ast.List):
            items = [self._value(e) for e in node.elts]
            return UNKNOWN if UNKNOWN in items else tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.UnaryOp):
            operand = self._value(node.operand)
            if operand is UNKNOWN:
                return UNKNOWN
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand if isinstance(node.op, ast.UAdd) else UNKNOWN
        if isinstance(node, ast.BoolOp):
            values = [self.value(v) for v in node.values]
            decisive = [bool(v) for v in values if v is not UNKNOWN]
            if isinstance(node.op, ast.And):
                return False if False in decisive else UNKNOWN if UNKNOWN in values else True
            return True if True in decisive else UNKNOWN if UNKNOWN in values else False
        if isinstance(node, ast.Compare):
            left = self._value(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._value(right_node)
                if left is UNKNOWN or right is UNKNOWN or type(op) not in _COMPARE:
                    return UNKNOWN
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._value(node.left), self._value(node.right)
            return UNKNOWN if UNKNOWN in (left, right) else _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Subscript):
            seq, index = self._value(node.value), self._value(node.slice)
            return UNKNOWN if UNKNOWN in (seq, index) or not isinstance(index, int) else seq[index]
        if isinstance(node, ast.JoinedStr):
            return "".join(self._formatted(v) for v in node.values)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            return self._call(node.func.id, node.args)
        return UNKNOWN

    def _formatted(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        assert isinstance(node, ast.FormattedValue)
        value = self._value(node.value)
        if value is UNKNOWN:
            raise ValueError("unknown part of a message")
        spec = self._value(node.format_spec) if node.format_spec is not None else ""
        value = repr(value) if node.conversion == ord("r") else str(value) if node.conversion == ord("s") else value
        return format(value, spec)

    def _call(self, func: str, args: list[ast.expr]) -> Any:
        if func == "len" and len(args) == 1:
            value = self._value(args[0])
            return UNKNOWN if value is UNKNOWN else len(value)
        if func != "isinstance" or len(args) != 2:
            return UNKNOWN
        value = self._value(args[0])
        kinds = args[1].elts if isinstance(args[1], ast.Tuple) else [args[1]]
        names = [k.id if isinstance(k, ast.Name) else k.attr if isinstance(k, ast.Attribute) else "" for k in kinds]
        if value is UNKNOWN or not all(n in _SCALARS or n in _NEVER for n in names):
            return UNKNOWN
        return isinstance(value, tuple(_SCALARS[n] for n in names if n in _SCALARS))
