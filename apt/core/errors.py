"""ConfigProblems: what every configuration check raises, and how it is printed.

A bad input is answered with one ``error:`` line per problem, naming the bad value and the
valid choices, and at most one ``hint:`` line; train.py, ``python -m apt check`` and every
multirun job print them through :func:`report`, so the same mistake reads the same
everywhere. Exit status 2 means "the configuration is wrong", nothing ran.

What no command can answer itself, an interrupt (Ctrl-C) or a disk with no room left, ends
every command in one line too (:func:`ends_in_one_line`): ``interrupted`` with exit status
130, or an ``error:`` line naming the file and the free space with exit status 1.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = ["CONFIG_ERROR_EXIT", "INTERRUPTED_EXIT", "ConfigProblems", "Problem", "describe", "did_you_mean",
           "ends_in_one_line", "report"]

#: Exit status of a run (or ``apt check``) refused for a configuration problem.
CONFIG_ERROR_EXIT = 2

#: Exit status of a command stopped by an interrupt: 128 + SIGINT, as a shell reports it.
INTERRUPTED_EXIT = 130


class Problem(str):
    """One problem line that may carry a hint (what to do about it) for the user."""

    hint: str | None

    def __new__(cls, text: str, hint: str | None = None) -> Problem:
        obj = super().__new__(cls, text)
        obj.hint = hint
        return obj


class ConfigProblems(ValueError):
    """Configuration problems, one readable line each, and an optional hint for the user.

    Without an explicit ``hint`` the first :class:`Problem` that carries one supplies it.
    """

    def __init__(self, problems: Sequence[str], hint: str | None = None) -> None:
        self.problems = list(problems)
        self.hint = hint or next((h for p in self.problems if (h := getattr(p, "hint", None))), None)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        """``error: ...`` per problem, then ``hint: ...`` when there is one."""
        return [f"error: {p}" for p in self.problems] + ([f"hint: {self.hint}"] if self.hint else [])


def report(exc: ConfigProblems, file: TextIO | None = None) -> None:
    """Print ``exc`` as its ``error:``/``hint:`` lines (stderr by default)."""
    out = file if file is not None else sys.stderr
    for line in exc.lines():
        print(line, file=out)


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``choices``, else ``""``."""
    choices = [str(c) for c in choices]
    same_letters = [c for c in choices if c.lower() == str(name).lower()]
    close = same_letters or difflib.get_close_matches(str(name), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def ends_in_one_line(main: Callable[..., int]) -> Callable[..., int]:
    """A command's ``main`` that ends in one line, not a traceback, when interrupted
    (``interrupted``, exit status 130) or when a write finds no room (``error: cannot write
    FILE: ... (N free on its filesystem)``, exit status 1). ``APT_DEBUG=1`` shows the traceback."""
    @functools.wraps(main)
    def command(*args: object, **kwargs: object) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            if os.environ.get("APT_DEBUG"):
                raise
            print("interrupted", file=sys.stderr)
            return INTERRUPTED_EXIT
        except Exception as exc:
            from apt.core.files import no_space_line

            line = no_space_line(exc)
            if line is None or os.environ.get("APT_DEBUG"):
                raise
            print(f"error: {line}", file=sys.stderr)
            return 1
    return command


def describe(obj: object) -> str:
    """What ``obj`` is, for a message about a ``_target_`` of the wrong kind ("the function
    os.system"); looks at the object only, calls nothing."""
    import inspect

    name = f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    if isinstance(obj, type):
        return f"the class {name}"
    if inspect.isbuiltin(obj):
        return f"the built-in function {name}"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"the function {name}"
    return f"a {type(obj).__qualname__} object"
