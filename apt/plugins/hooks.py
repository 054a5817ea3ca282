"""HookManager: named events, prioritised hooks, conditions, error isolation.

The training loop is written as a sequence of events (see :data:`EVENTS`)::

    on_model_init
    on_train_begin
    for epoch in 1..E:
        on_epoch_begin
        for step:
            on_step_begin, on_batch_begin
            forward -> on_batch_end
            on_backward_begin, backward, on_backward_end
            optimizer.step() -> on_optimizer_step
            on_step_end
        on_validation_begin, validate, on_validation_end
        on_epoch_end
        on_checkpoint_save
    on_train_end

Semantics (ARCHITECTURE.md): higher priority runs earlier, ties in registration order;
``on_*_start`` names are aliases of the ``on_*_begin`` events; one callable registered
twice for an event runs once; hooks owned by a disabled plugin are skipped; a raising
hook is logged and the others still run, unless strict mode re-raises; a hook disabled after
repeated failures is kept with its plugin's first error (:meth:`HookManager.disabled_hooks`),
so the run can fail or name it in its summary (``trainer.on_plugin_error``). ``trigger`` is on
the training hot path, so the ordered hook tuple of each event is rebuilt at register
time and the loop does no sorting or allocation beyond the result list.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apt.plugins.base import Plugin

__all__ = [
    "CONTEXT_PARAMS",
    "EVENTS",
    "EVENT_ALIASES",
    "EVENT_EXTRAS",
    "EVENT_PARAMS",
    "DisabledHook",
    "HookInfo",
    "HookManager",
    "HookSignatureError",
    "STRICT_ENV_VAR",
    "canonical_event",
    "hook_manager",
    "hook_parameters",
]

log = logging.getLogger(__name__)

#: The keywords every standard event passes (the trainer's context; see :data:`EVENT_PARAMS`).
CONTEXT_PARAMS: tuple[str, ...] = ("trainer", "model", "optimizer", "schedule", "epoch", "step")

#: Event -> the keywords it passes beyond :data:`CONTEXT_PARAMS`, in the order one training run
#: fires the events first. The one declaration of what each event passes: the trainer fires
#: exactly these (:meth:`apt.training.trainer.Trainer.fire` refuses anything else) and
#: :meth:`HookManager.register` checks a hook's parameter names against them.
EVENT_EXTRAS: dict[str, tuple[str, ...]] = {
    "on_model_init": (),
    "on_train_begin": ("config",),
    "on_train_end": ("metrics",),
    "on_epoch_begin": (),
    "on_epoch_end": ("metrics",),
    "on_step_begin": ("batch",),
    "on_step_end": ("loss",),
    "on_batch_begin": ("batch",),
    "on_batch_end": ("batch", "outputs"),
    "on_backward_begin": ("loss",),
    "on_backward_end": (),
    "on_optimizer_step": (),
    "on_validation_begin": (),
    "on_validation_end": ("metrics",),
    "on_checkpoint_save": ("checkpoint_path",),
    "on_checkpoint_load": ("checkpoint_path", "checkpoint"),
}

#: Event -> every keyword it passes (context first): the parameter names its hooks may take.
EVENT_PARAMS: dict[str, tuple[str, ...]] = {e: CONTEXT_PARAMS + x for e, x in EVENT_EXTRAS.items()}

#: The 16 standard lifecycle events, in the order one training run fires them first.
EVENTS: tuple[str, ...] = tuple(EVENT_EXTRAS)

#: ``on_X_start`` -> ``on_X_begin``: the guide uses both spellings for the same event.
EVENT_ALIASES: dict[str, str] = {
    e.replace("_begin", "_start"): e for e in EVENTS if e.endswith("_begin")
}

#: Set to 1/true/yes to make every HookManager without an explicit ``strict`` re-raise.
STRICT_ENV_VAR = "APT_STRICT_HOOKS"

_ALL_NAMES = EVENTS + tuple(EVENT_ALIASES)


def canonical_event(event: str) -> str:
    """The event an (alias) name stands for: ``on_epoch_start`` -> ``on_epoch_begin``."""
    return EVENT_ALIASES.get(event, event)


class HookSignatureError(TypeError):
    """A hook whose parameters its event cannot fill: a name the event never passes (a typo
    such as ``stpe=None`` would otherwise get None forever) or a positional-only parameter
    without a default (events pass keywords). Raised by :meth:`HookManager.register`, so at
    plugin setup, before anything runs."""


def hook_parameters(fn: Callable[..., Any]) -> tuple[tuple[str, ...], bool, tuple[str, ...]] | None:
    """``(keyword names, takes **kwargs, required positional-only names)`` of ``fn``, or None
    for a builtin (``print``: not written as a hook) or a signature that cannot be read; such
    a hook is neither checked nor given a subset of the keywords."""
    if inspect.isbuiltin(fn):
        return None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    names: list[str] = []
    positional_only: list[str] = []
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.POSITIONAL_ONLY:
            if p.default is p.empty:
                positional_only.append(p.name)
        elif p.kind is not p.VAR_POSITIONAL:
            names.append(p.name)
    return tuple(names), var_kw, tuple(positional_only)


def _check_hook(event: str, given: str, label: str, owner: Plugin | None,
                params: tuple[tuple[str, ...], bool, tuple[str, ...]] | None) -> None:
    """Raise :class:`HookSignatureError` when a hook of the standard ``event`` takes a
    parameter that event never passes. Custom events declare no parameters: not checked."""
    passes = EVENT_PARAMS.get(event)
    if params is None or passes is None:
        return
    names, _, positional_only = params
    who = f"hook {label!r}" + (f" of plugin {_owner_name(owner)!r}" if owner is not None else "")
    on = f"event {event!r}" + (f" (registered as {given!r})" if given != event else "")
    for name in names:
        if name not in passes:
            close = difflib.get_close_matches(name, passes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HookSignatureError(
                f"{who} on {on} takes parameter {name!r}, which that event never passes{hint}; "
                f"{event} passes: {', '.join(passes)} (take **kwargs for the rest)")
    if positional_only:
        raise HookSignatureError(
            f"{who} on {on} takes positional-only parameter(s) {', '.join(map(repr, positional_only))}, "
            f"which no event can fill (events pass keywords: {', '.join(passes)})")


class _Hook:
    """One registration. Mutable counters live here so trigger() updates them in place."""

    __slots__ = (
        "fn", "argnames", "name", "priority", "condition", "owner", "seq", "event",
        "calls", "failures", "total_time", "disabled", "first_error",
    )

    def __init__(self, event: str, fn: Callable[..., Any], name: str, priority: int,
                 condition: Callable[..., bool] | None, owner: Plugin | None, seq: int,
                 argnames: tuple[str, ...] | None = None) -> None:
        self.event = event
        self.fn = fn
        # None: fn takes every keyword (**kwargs); else only these are passed (as pluggy does).
        self.argnames = argnames
        self.name = name
        self.priority = priority
        self.condition = condition
        self.owner = owner
        self.seq = seq
        self.calls = 0
        self.failures = 0
        self.total_time = 0.0
        self.disabled = False
        self.first_error: str | None = None  # its plugin's first error, once disabled


@dataclass(frozen=True)
class DisabledHook:
    """A hook disabled by repeated failures, with the first error its plugin raised (the
    cause; later failures are often consequences of it)."""

    event: str
    name: str
    plugin: str | None
    failures: int
    first_error: str

    def __str__(self) -> str:
        who = f"plugin {self.plugin!r}" if self.plugin is not None else f"hook {self.name!r}"
        return (f"{who} failed: hook {self.name!r} disabled on {self.event!r} after {self.failures} "
                f"failures; first error: {self.first_error}")


@dataclass(frozen=True)
class HookInfo:
    """A snapshot of one hook: where it runs, who owns it and how it has behaved."""

    event: str
    name: str
    priority: int
    plugin: str | None
    condition: str | None
    calls: int
    failures: int
    total_time: float
    disabled: bool

    @property
    def mean_time(self) -> float:
        return self.total_time / self.calls if self.calls else 0.0


def _key(fn: Callable[..., Any]) -> Any:
    try:
        hash(fn)
    except TypeError:
        return ("id", id(fn))
    return fn


def _error_text(exc: BaseException) -> str:
    """``IndexError: index 5 is out of range``: one line, short enough for a summary."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _owner_name(owner: Plugin | None) -> str | None:
    if owner is None:
        return None
    try:
        return owner.get_name()
    except Exception:  # noqa: BLE001 - a broken get_name must not break error reporting
        return type(owner).__name__


class HookManager:
    """Registers callables on events and runs them in priority order.

    ``strict=None`` reads :data:`STRICT_ENV_VAR` when a hook fails, so tests can switch
    strict mode on for the shared default instance. ``max_failures`` failures of one hook
    disable it (``None`` never disables).
    """

    def __init__(self, *, strict: bool | None = None, max_failures: int | None = 3) -> None:
        if max_failures is not None and max_failures < 1:
            raise ValueError(f"max_failures must be >= 1 or None, got {max_failures!r}")
        self.strict = strict
        self.max_failures = max_failures
        self._hooks: dict[str, dict[Any, _Hook]] = {}
        # event (canonical) -> hooks in run order; rebuilt on every change.
        self._ordered: dict[str, tuple[_Hook, ...]] = {}
        self._seq = 0
        self._owners: list[Plugin] = []
        self._first_errors: dict[int, str] = {}  # id of a plugin (or ownerless hook) -> its first error
        self._disabled: list[_Hook] = []  # in the order they were disabled

    # -- registration -------------------------------------------------------------------
    def register(
        self,
        event: str,
        fn: Callable[..., Any],
        priority: int = 0,
        name: str | None = None,
        condition: Callable[..., bool] | None = None,
        *,
        owner: Plugin | None = None,
    ) -> Callable[..., Any]:
        """Run ``fn(**event_kwargs)`` on ``event``; returns ``fn``.

        The parameter names of a hook of a standard event must be keywords that event passes
        (:data:`EVENT_PARAMS`), else :class:`HookSignatureError`; a hook without ``**kwargs``
        is called with the ones it names only. Registering the same callable for the same
        event again updates its priority, name and condition instead of adding a second copy. The owner (whose disabling
        silences the hook and whose teardown removes it) is ``owner``, else the plugin a
        bound method belongs to, else the plugin currently being set up.
        """
        if not isinstance(event, str) or not event:
            raise ValueError(f"event must be a non-empty string, got {event!r}")
        if not callable(fn):
            raise TypeError(f"hook for {event!r} must be callable, got {fn!r}")
        if condition is not None and not callable(condition):
            raise TypeError(f"condition for hook on {event!r} must be callable, got {condition!r}")
        given, event = event, canonical_event(event)
        if event not in EVENTS:
            self._warn_near_miss(event)
        if owner is None:
            owner = self._owner_of(fn)
        key = _key(fn)
        old = self._hooks.get(event, {}).get(key)
        label = name or (old.name if old is not None else None) or getattr(fn, "__qualname__", None) or repr(fn)
        params = hook_parameters(fn)
        _check_hook(event, given, label, owner or (old.owner if old is not None else None), params)
        argnames = None if params is None or params[1] else params[0]
        if old is not None:
            old.priority = priority
            old.name = label
            old.condition = condition
            old.owner = owner or old.owner
        else:
            self._seq += 1
            self._hooks.setdefault(event, {})[key] = _Hook(event, fn, label, priority, condition, owner, self._seq, argnames)
        self._rebuild(event)
        return fn

    def unregister(self, event: str, fn_or_name: Callable[..., Any] | str) -> bool:
        """Remove a hook by callable or by name; False when nothing matched."""
        event = canonical_event(event)
        hooks = self._hooks.get(event, {})
        if isinstance(fn_or_name, str):
            keys = [k for k, h in hooks.items() if h.name == fn_or_name]
        else:
            keys = [k for k in (_key(fn_or_name),) if k in hooks]
        for k in keys:
            del hooks[k]
        if keys:
            self._rebuild(event)
        return bool(keys)

    def unregister_owner(self, owner: Plugin) -> int:
        """Remove every hook ``owner`` registered (teardown/unload); returns how many."""
        removed = 0
        for event, hooks in self._hooks.items():
            keys = [k for k, h in hooks.items() if h.owner is owner]
            for k in keys:
                del hooks[k]
            if keys:
                removed += len(keys)
                self._rebuild(event)
        return removed

    def clear(self) -> None:
        self._hooks.clear()
        self._ordered.clear()
        self._first_errors.clear()
        self._disabled.clear()

    @contextlib.contextmanager
    def owned_by(self, plugin: Plugin) -> Iterator[None]:
        """Attribute hooks registered inside the block (plain functions too) to ``plugin``."""
        self._owners.append(plugin)
        try:
            yield
        finally:
            self._owners.pop()

    def register_plugin_hooks(self, plugin: Plugin) -> int:
        """Register ``plugin``'s overridden ``on_*`` methods that are not registered yet.

        Existing registrations are left alone so that an explicit ``register`` with its
        own priority (the guide's Step 2) is not undone. Returns how many were added.
        """
        from apt.plugins.base import overridden_hook_methods

        added = 0
        for attr, event in overridden_hook_methods(type(plugin)):
            method = getattr(plugin, attr)
            if _key(method) in self._hooks.get(event, {}):
                continue
            self.register(event, method, priority=plugin.get_priority(),
                          name=f"{_owner_name(plugin)}.{attr}", owner=plugin)
            added += 1
        return added

    # -- running ------------------------------------------------------------------------
    def trigger(self, event: str, **kwargs: Any) -> list[Any]:
        """Run the hooks of ``event`` with ``kwargs``; returns the results of those that ran."""
        hooks = self._ordered.get(EVENT_ALIASES.get(event, event))
        results: list[Any] = []
        if not hooks:
            return results
        for h in hooks:
            owner = h.owner
            if owner is not None and not owner._enabled:
                continue
            cond = h.condition
            if cond is not None and not cond(**kwargs):
                continue
            t0 = perf_counter()
            try:
                names = h.argnames
                results.append(h.fn(**kwargs) if names is None
                               else h.fn(**{k: kwargs[k] for k in names if k in kwargs}))
            except Exception as exc:
                h.total_time += perf_counter() - t0
                h.calls += 1
                self._failed(h, exc)
                continue
            h.total_time += perf_counter() - t0
            h.calls += 1
        return results

    def _failed(self, h: _Hook, exc: Exception) -> None:
        h.failures += 1
        first = self._first_errors.setdefault(id(h.owner if h.owner is not None else h), _error_text(exc))
        log.error("hook %r of plugin %r failed on event %r (failure %d)",
                  h.name, _owner_name(h.owner), h.event, h.failures, exc_info=exc)
        if self.is_strict():
            raise exc
        if self.max_failures is not None and h.failures >= self.max_failures and not h.disabled:
            h.disabled, h.first_error = True, first
            self._disabled.append(h)
            self._rebuild(h.event)
            log.warning("hook %r of plugin %r disabled on event %r after %d failures",
                        h.name, _owner_name(h.owner), h.event, h.failures)

    def is_strict(self) -> bool:
        if self.strict is not None:
            return self.strict
        return os.environ.get(STRICT_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")

    # -- inspection ---------------------------------------------------------------------
    def list_hooks(self, event: str | None = None) -> list[HookInfo]:
        """Hooks of one event (or of all, event by event) in run order, with statistics.

        Hooks disabled after repeated failures are listed last with ``disabled=True``.
        """
        events = [canonical_event(event)] if event is not None else sorted(self._hooks)
        out = []
        for ev in events:
            hooks = sorted(self._hooks.get(ev, {}).values(), key=lambda h: (h.disabled, -h.priority, h.seq))
            out += [
                HookInfo(ev, h.name, h.priority, _owner_name(h.owner),
                         None if h.condition is None else getattr(h.condition, "name", repr(h.condition)),
                         h.calls, h.failures, h.total_time, h.disabled)
                for h in hooks
            ]
        return out

    def disabled_hooks(self) -> list[DisabledHook]:
        """Hooks disabled by repeated failures, in the order that happened, each with the first
        error of its plugin. A hook unregistered since (teardown) is still listed: the run it
        failed in was not the run that was asked for."""
        return [DisabledHook(h.event, h.name, _owner_name(h.owner), h.failures, h.first_error or "")
                for h in self._disabled]

    def events(self) -> list[str]:
        """Events that have at least one hook."""
        return sorted(e for e, hooks in self._hooks.items() if hooks)

    def reset_stats(self) -> None:
        for hooks in self._hooks.values():
            for h in hooks.values():
                h.calls = h.failures = 0
                h.total_time = 0.0

    # -- internals ----------------------------------------------------------------------
    def _owner_of(self, fn: Callable[..., Any]) -> Plugin | None:
        from apt.plugins.base import Plugin

        bound_to = getattr(fn, "__self__", None)
        if isinstance(bound_to, Plugin):
            return bound_to
        return self._owners[-1] if self._owners else None

    def _rebuild(self, event: str) -> None:
        live = [h for h in self._hooks.get(event, {}).values() if not h.disabled]
        live.sort(key=lambda h: (-h.priority, h.seq))
        if live:
            self._ordered[event] = tuple(live)
        else:
            self._ordered.pop(event, None)

    @staticmethod
    def _warn_near_miss(event: str) -> None:
        close = difflib.get_close_matches(event, _ALL_NAMES, n=1, cutoff=0.85)
        if close:
            log.warning("hook event %r is not a standard event; did you mean %r? "
                        "(custom events are allowed, but this one looks like a typo)",
                        event, close[0])


#: The default hook manager, used by the default ``plugin_manager``.
hook_manager = HookManager()
