"""Hook conditions: small predicates over an event's keyword arguments.

A condition is called with exactly the keywords the event was triggered with
(``epoch=..., step=..., trainer=...``) and returns whether the hook should run. Epochs and
steps count from 1, so ``every_n_epochs(5)`` fires at epochs 5, 10, ... A condition whose
keyword is missing from the event is simply false: an epoch condition never fires on an
event that carries no epoch.

Conditions compose with ``&``, ``|`` and ``~`` (or :func:`all_of` / :func:`any_of`), and
any plain callable accepting ``**kwargs`` may be used wherever a condition is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "Condition",
    "after_epoch",
    "after_step",
    "all_of",
    "any_of",
    "before_epoch",
    "before_step",
    "every_n_epochs",
    "every_n_steps",
]

Predicate = Callable[..., bool]


class Condition:
    """A named predicate over event keywords that composes with ``&``, ``|`` and ``~``.

    The name shows in ``repr`` and in :meth:`HookManager.list_hooks`, so that a listing of
    hooks says *when* each one runs, not just that it has a condition.
    """

    __slots__ = ("_fn", "name")

    def __init__(self, fn: Predicate, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a condition must be callable, got {fn!r}")
        self._fn = fn
        self.name = name or getattr(fn, "__name__", repr(fn))

    def __call__(self, **kwargs: Any) -> bool:
        return bool(self._fn(**kwargs))

    def __and__(self, other: Predicate) -> Condition:
        return all_of(self, other)

    def __rand__(self, other: Predicate) -> Condition:
        return all_of(other, self)

    def __or__(self, other: Predicate) -> Condition:
        return any_of(self, other)

    def __ror__(self, other: Predicate) -> Condition:
        return any_of(other, self)

    def __invert__(self) -> Condition:
        fn = self._fn
        return Condition(lambda **kw: not fn(**kw), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Condition({self.name})"


def _name(pred: Predicate) -> str:
    return pred.name if isinstance(pred, Condition) else getattr(pred, "__name__", repr(pred))


def all_of(*conditions: Predicate) -> Condition:
    """True when every condition holds (short-circuits left to right)."""
    conds = tuple(conditions)
    return Condition(lambda **kw: all(c(**kw) for c in conds), "(" + " & ".join(map(_name, conds)) + ")")


def any_of(*conditions: Predicate) -> Condition:
    """True when at least one condition holds (short-circuits left to right)."""
    conds = tuple(conditions)
    return Condition(lambda **kw: any(c(**kw) for c in conds), "(" + " | ".join(map(_name, conds)) + ")")


def _positive(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{what} needs a positive integer, got {n!r}")
    return n


def _non_negative(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} needs a non-negative integer, got {n!r}")
    return n


def every_n_epochs(n: int) -> Condition:
    """Epochs n, 2n, 3n, ... (epochs count from 1, so never at a 0th epoch)."""
    n = _positive(n, "every_n_epochs")
    return Condition(lambda epoch=None, **_: epoch is not None and epoch > 0 and epoch % n == 0, f"every_n_epochs({n})")


def every_n_steps(n: int) -> Condition:
    """Steps n, 2n, 3n, ... (steps count optimizer steps done, from 1)."""
    n = _positive(n, "every_n_steps")
    return Condition(lambda step=None, **_: step is not None and step > 0 and step % n == 0, f"every_n_steps({n})")


def after_epoch(n: int) -> Condition:
    """Epoch >= n: ``after_epoch(10)`` fires from the 10th epoch on."""
    n = _non_negative(n, "after_epoch")
    return Condition(lambda epoch=None, **_: epoch is not None and epoch >= n, f"after_epoch({n})")


def before_epoch(n: int) -> Condition:
    """Epoch < n: ``before_epoch(3)`` fires at epochs 1 and 2."""
    n = _non_negative(n, "before_epoch")
    return Condition(lambda epoch=None, **_: epoch is not None and epoch < n, f"before_epoch({n})")


def after_step(n: int) -> Condition:
    """Step >= n."""
    n = _non_negative(n, "after_step")
    return Condition(lambda step=None, **_: step is not None and step >= n, f"after_step({n})")


def before_step(n: int) -> Condition:
    """Step < n."""
    n = _non_negative(n, "before_step")
    return Condition(lambda step=None, **_: step is not None and step < n, f"before_step({n})")
