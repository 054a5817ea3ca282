"""Schedule: when plugins switch on and how scalar hyper-parameters anneal.

One ``schedule:`` mapping (Hydra group ``conf/schedule/``) holds two kinds of entries::

    enable_moe_at_epoch: 2          # plugin "moe" is off in epoch 1, on from epoch 2
    enable_align_at_step: 500       # plugin "align" is on from the 500th optimizer step
    route_temp: {start: 1.5, end: 0.8, by: epoch}                 # linear by default
    alpha: {start: 0.0, end: 0.35, by: step, type: cosine, warmup: 100, cooldown: 50}
    z_loss: 0.001                   # a bare number is a constant

Positions count from 1 (ARCHITECTURE.md): ``epoch=1`` is the first epoch and ``step=s``
is the s-th optimizer step, so an epoch schedule reads ``start`` in epoch 1 and ``end``
in the run's last epoch (``max_epochs``); a step schedule reads ``start`` at step 1 and
``end`` at ``max_steps``. ``warmup`` holds ``start`` for that many positions first and
``cooldown`` holds ``end`` for that many positions last; the anneal runs in between.
:meth:`Schedule.get` is a pure function of the position, so a resumed run that restores
the position (:meth:`Schedule.state_dict`) reads exactly the values it would have read.

The trainer calls :meth:`Schedule.apply` before each epoch's ``on_epoch_begin``
(``by="epoch"``) and before each step (``by="step"``). It enables/disables scheduled
plugins, publishes the current values in ``trainer.schedule_values``, logs them as
``schedule/<name>`` metrics and calls the callbacks registered with :meth:`Schedule.bind`.

Config interpolation: importing this module registers the OmegaConf resolver
``${schedule:NAME}`` (or ``${schedule:NAME,DEFAULT}``). It is not cached: while a
schedule is active (:meth:`Schedule.activate`, done by :meth:`apply`) it returns that
schedule's value at the current position, so a config node kept as an OmegaConf object
reads a live value on every access. Before training (nothing active) it reads the entry's
``start`` from the root config's ``schedule:`` section, so a config that is resolved once
into a plain dict holds the starting value. Plugins that follow a value while training
read it from the ``schedule`` every hook receives: ``moe`` sets its routers' temperature
from the entry named by its ``temperature_from`` option (default ``route_temp``), ``align``
its loss weight from ``alpha_from`` (default ``align_alpha``).

No torch here: the schedule is checked together with the rest of the config.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from apt.core.config import to_plain
from apt.core.errors import did_you_mean

__all__ = [
    "BYS",
    "TYPES",
    "ParamSchedule",
    "Schedule",
    "ScheduleError",
    "current_schedule",
    "register_resolver",
]

log = logging.getLogger(__name__)

#: Units a schedule can count in.
BYS = ("epoch", "step")
#: Curve shapes between ``start`` and ``end``.
TYPES = ("linear", "cosine", "exp")

_ENABLE_RE = re.compile(r"^enable_(?P<plugin>.+)_at_(?P<by>epoch|step)$")
_SPEC_KEYS = {"start", "end", "by", "type", "warmup", "cooldown", "horizon"}


class ScheduleError(ValueError):
    """A schedule entry that cannot be evaluated; the message names the entry."""


@dataclass(frozen=True)
class ParamSchedule:
    """One annealed scalar: ``start`` -> ``end`` over ``horizon`` epochs or steps."""

    name: str
    start: float
    end: float
    by: str = "epoch"
    type: str = "linear"
    warmup: int = 0
    cooldown: int = 0
    horizon: int | None = None

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if self.by not in BYS:
            raise ScheduleError(f"{where}: by={self.by!r} is not one of {list(BYS)}")
        if self.type not in TYPES:
            raise ScheduleError(f"{where}: type={self.type!r} is not one of {list(TYPES)}")
        _check_int(f"{where}: warmup", self.warmup, 0)
        _check_int(f"{where}: cooldown", self.cooldown, 0)
        if self.horizon is not None:
            _check_int(f"{where}: horizon", self.horizon, 1)
        if self.type == "exp" and (
            self.start == 0 or self.end == 0 or (self.start > 0) != (self.end > 0)
        ):
            raise ScheduleError(
                f"{where}: type='exp' needs start and end non-zero with the same sign, "
                f"got start={self.start}, end={self.end}"
            )

    def value(self, position: int) -> float:
        """The value at ``position`` (1-based epoch or step); clamped outside [1, horizon]."""
        if self.start == self.end:
            return float(self.start)
        assert self.horizon is not None  # Schedule fills it in or refuses the entry
        first = 1 + self.warmup
        last = self.horizon - self.cooldown
        if last <= first:  # no room left to anneal: switch from start to end after the warmup
            t = 0.0 if position < first else 1.0
        else:
            t = min(max((position - first) / (last - first), 0.0), 1.0)
        if self.type == "linear":
            return self.start + (self.end - self.start) * t
        if self.type == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.start * (self.end / self.start) ** t  # exp: geometric interpolation


class Schedule:
    """Plugin enablement by epoch/step and annealed scalars, evaluated by position.

    Args:
        config: the ``schedule:`` mapping (dict or OmegaConf node; ``None`` = empty).
        max_epochs / max_steps: the run's length, the horizon of ``by: epoch`` /
            ``by: step`` entries that do not give their own ``horizon``.
        reported: warnings the config check already showed for this run; :meth:`apply`
            does not log them again.

    Raises:
        ScheduleError: an entry with ``by`` other than epoch/step, an unknown ``type``,
            a missing ``start``/``end``, a plugin scheduled both by epoch and by step,
            or an annealed entry whose horizon is unknown.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        *,
        reported: Iterable[str] = (),
    ) -> None:
        self.config: dict[str, Any] = to_plain(config) if config is not None else {}
        if not isinstance(self.config, dict):
            raise ScheduleError(
                f"schedule config must be a mapping, got {type(self.config).__name__}"
            )
        self.max_epochs = _positive_or_none("max_epochs", max_epochs)
        self.max_steps = _positive_or_none("max_steps", max_steps)
        self.enable_at: dict[str, tuple[str, int]] = {}
        self.params: dict[str, ParamSchedule] = {}
        for key, value in self.config.items():
            if str(key).startswith("_"):
                continue
            match = _ENABLE_RE.match(str(key))
            if match:
                self._add_enablement(str(key), match["plugin"], match["by"], value)
            else:
                self.params[str(key)] = self._parse_param(str(key), value)
        self.epoch: int | None = None
        self.step: int | None = None
        self._bindings: dict[str, list[Callable[[float], Any]]] = {}
        self._plugin_state: dict[str, bool] = {}
        self._checked_run = False
        #: Warnings the run already showed (the config check's): :meth:`apply` does not repeat them.
        self.reported = frozenset(reported)

    # -- parsing ------------------------------------------------------------------------
    def _add_enablement(self, key: str, plugin: str, by: str, value: Any) -> None:
        _check_int(f"schedule {key}", value, 1)
        if plugin in self.enable_at and self.enable_at[plugin][0] != by:
            raise ScheduleError(
                f"schedule: plugin {plugin!r} is scheduled both by epoch and by step; keep one"
            )
        self.enable_at[plugin] = (by, value)

    def _parse_param(self, name: str, spec: Any) -> ParamSchedule:
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return ParamSchedule(name, float(spec), float(spec), horizon=1)
        if not isinstance(spec, Mapping):
            raise ScheduleError(
                f"schedule {name!r}: expected a number or a mapping with start/end, got {spec!r}"
            )
        missing = [k for k in ("start", "end") if spec.get(k) is None]
        if missing:
            raise ScheduleError(
                f"schedule {name!r}: missing {' and '.join(missing)} in {dict(spec)}"
            )
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise ScheduleError(
                f"schedule {name!r}: unknown keys {unknown}; valid keys are {sorted(_SPEC_KEYS)}"
            )
        by = spec.get("by", "epoch")
        if by not in BYS:
            raise ScheduleError(f"schedule {name!r}: by={by!r} is not one of {list(BYS)}")
        horizon = spec.get("horizon")
        if horizon is None:
            horizon = self.max_epochs if by == "epoch" else self.max_steps
        try:
            start, end = float(spec["start"]), float(spec["end"])
        except (TypeError, ValueError):
            raise ScheduleError(f"schedule {name!r}: start and end must be numbers, got "
                                f"start={spec['start']!r}, end={spec['end']!r}") from None
        if horizon is None and start != end:
            raise ScheduleError(
                f"schedule {name!r} anneals by {by} but the horizon is unknown: set "
                f"trainer.max_{by}s or give the entry its own 'horizon'"
            )
        shape = {k: spec[k] for k in ("type", "warmup", "cooldown") if k in spec}
        return ParamSchedule(name, start, end, by=by, horizon=horizon, **shape)

    # -- queries ------------------------------------------------------------------------
    @property
    def scheduled_plugins(self) -> list[str]:
        """Names of plugins with an ``enable_<name>_at_*`` entry."""
        return list(self.enable_at)

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def should_enable_plugin(
        self, name: str, epoch: int | None = None, step: int | None = None
    ) -> bool:
        """Whether plugin ``name`` is on at this position (unscheduled plugins always are).

        Falls back to the recorded position when the needed coordinate is not passed.
        """
        if name not in self.enable_at:
            return True
        by, at = self.enable_at[name]
        position = self._position(by, epoch, step, what=f"enable_{name}_at_{by}")
        return position >= at

    def get(self, name: str, epoch: int | None = None, step: int | None = None) -> float:
        """Value of parameter ``name`` at the given (or recorded) epoch/step."""
        try:
            param = self.params[name]
        except KeyError:
            raise KeyError(
                f"no schedule entry {name!r}; scheduled values: {sorted(self.params) or 'none'}"
            ) from None
        if param.start == param.end:
            return float(param.start)
        return param.value(self._position(param.by, epoch, step, what=name))

    def _position(self, by: str, epoch: int | None, step: int | None, *, what: str) -> int:
        given, recorded = (epoch, self.epoch) if by == "epoch" else (step, self.step)
        position = given if given is not None else recorded
        if position is None:
            raise ScheduleError(
                f"schedule {what!r} counts by {by}: pass {by}= (no position recorded)"
            )
        return int(position)

    def check_plugins(self, selected: Iterable[str], available: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(errors, warnings)`` about the plugins ``enable_<name>_at_*`` entries name.

        A name no plugin has (``available``: every loadable plugin) is an error, usually a
        typo; a real plugin that is not ``selected`` is a warning: the entry has no effect.
        """
        selected, available = set(selected), sorted(set(available))
        errors, warns = [], []
        for name, (by, at) in self.enable_at.items():
            entry = f"schedule enable_{name}_at_{by}: {at}"
            if name not in available:
                errors.append(f"{entry} names plugin {name!r}, which does not exist"
                              f"{did_you_mean(name, available)}; plugins: {', '.join(available)}")
            elif name not in selected:
                warns.append(f"{entry} refers to plugin {name!r}, which is not selected "
                             f"(selected: {sorted(selected) or 'none'}); the entry has no effect")
        return errors, warns

    def unreachable(self, length: Any) -> list[str]:
        """Entries the run as configured never gets to, one readable line each.

        ``length`` is a :class:`~apt.training.progress.RunLength` or a trainer (its
        ``max_steps`` and ``steps_per_epoch``). The run's real length is ``trainer.max_steps``
        optimizer steps of ``trainer.steps_per_epoch`` each, which can end before
        ``max_epochs`` (a default ``max_steps`` caps a long epoch count): a plugin enabled
        later never turns on, and an epoch anneal stops short of its ``end``. The config
        check reports these (with bounds where the epoch length is not known yet);
        :meth:`apply` logs, once, those it did not.
        """
        from apt.training.progress import RunLength

        if not isinstance(length, RunLength):
            steps, per_epoch = getattr(length, "max_steps", None), getattr(length, "steps_per_epoch", None)
            if not isinstance(steps, int) or not isinstance(per_epoch, int) or per_epoch < 1:
                return []
            length = RunLength(steps, per_epoch, -(-steps // per_epoch))
        out = []
        for plugin, (by, at) in self.enable_at.items():
            last = length.last(by)
            if last is not None and at > last:
                out.append(f"enable_{plugin}_at_{by}: {at} is never reached: {length.ends(by)}")
        for name, p in self.params.items():
            last = length.last(p.by)
            if last is not None and p.start != p.end and p.horizon is not None and p.horizon - p.cooldown > last:
                out.append(
                    f"{name} anneals until {p.by} {p.horizon - p.cooldown} but {length.ends(p.by)}; "
                    f"it stops at {p.value(last):.4g} instead of {p.end:.4g}"
                )
        return out

    def table(self, by: str = "epoch", positions: Iterable[int] | None = None) -> str:
        """Timeline as a text table: one row per epoch (or step), values and enabled plugins.

        ``positions`` defaults to every epoch 1..max_epochs (``by="step"``: about 10
        evenly spaced steps up to max_steps).
        """
        if by not in BYS:
            raise ScheduleError(f"table: by={by!r} is not one of {list(BYS)}")
        horizon = self.max_epochs if by == "epoch" else self.max_steps
        if positions is None:
            if horizon is None:
                raise ScheduleError(f"table(by={by!r}) needs max_{by}s or explicit positions")
            stride = 1 if by == "epoch" else max(1, horizon // 10)
            positions = sorted({*range(1, horizon + 1, stride), horizon})
        cols = [p for p, s in self.params.items() if s.by == by or s.start == s.end]
        plugins = [p for p, (b, _) in self.enable_at.items() if b == by]
        rows = [[by, *cols, *(f"+{p}" for p in plugins)]]
        for pos in positions:
            kw = {by: pos}
            rows.append(
                [
                    str(pos),
                    *(f"{self.get(c, **kw):.4g}" for c in cols),
                    *("on" if self.should_enable_plugin(p, **kw) else "off" for p in plugins),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows
        )

    # -- applying to a run ----------------------------------------------------------------
    def bind(self, name: str, callback: Callable[[float], Any]) -> None:
        """Call ``callback(value)`` whenever :meth:`apply` publishes ``name``."""
        if name not in self.params:
            raise KeyError(
                f"cannot bind {name!r}: no such schedule entry; have {sorted(self.params)}"
            )
        self._bindings.setdefault(name, []).append(callback)

    def activate(self) -> Schedule:
        """Make this the schedule that ``${schedule:NAME}`` resolves against."""
        global _ACTIVE
        _ACTIVE = self
        return self

    def deactivate(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None

    def sync_plugins(self, plugins: Any, epoch: int | None = None, step: int | None = None) -> None:
        """Enable/disable the scheduled plugins of a PluginManager for this position.

        Plugins that are not loaded are skipped (the config check warned about them).
        A plugin whose coordinate is unknown yet (a step schedule before any step) is off.
        """
        loaded = set(plugins.list_plugins())
        for name, (by, at) in self.enable_at.items():
            if name not in loaded:
                continue
            position = epoch if by == "epoch" else step
            if position is None:
                position = self.epoch if by == "epoch" else self.step
            want = position is not None and position >= at
            if self._plugin_state.get(name) == want:
                continue
            if want:
                plugins.enable_plugin(name)
                log.info("schedule: enabled plugin %r at %s %s", name, by, position)
            else:
                plugins.disable_plugin(name)
                log.info("schedule: plugin %r off until %s %d", name, by, at)
            self._plugin_state[name] = want

    def apply(
        self, trainer: Any, epoch: int | None = None, step: int | None = None, by: str = "epoch",
        *, publish: bool = True,
    ) -> dict[str, float]:
        """Move to a boundary: record the position, switch plugins, publish values.

        Called by the trainer before ``on_epoch_begin`` of ``epoch`` (``by="epoch"``) and
        before step number ``step`` runs (``by="step"``; 1 = the first step). Values of
        entries counted in ``by`` units are logged via ``trainer.log_metric`` as
        ``schedule/<name>`` and passed to bound callbacks; all current values go to
        ``trainer.schedule_values``. Returns the values published at this boundary.

        ``publish=False`` (a run resumed inside an epoch, whose boundary was published
        before the checkpoint) switches plugins and calls the callbacks but logs nothing.
        """
        if by not in BYS:
            raise ScheduleError(f"apply: by={by!r} is not one of {list(BYS)}")
        if epoch is not None:
            self.epoch = int(epoch)
        if step is not None:
            self.step = int(step)
        self.activate()
        if not self._checked_run:
            self._checked_run = True
            for problem in self.unreachable(trainer):
                if f"schedule: {problem}" not in self.reported:
                    log.warning("schedule: %s", problem)
        plugins = getattr(trainer, "plugins", None)
        if plugins is not None:
            self.sync_plugins(plugins)
        current: dict[str, float] = {}
        published: dict[str, float] = {}
        for name, param in self.params.items():
            try:
                current[name] = value = self.get(name)
            except ScheduleError:
                continue  # its coordinate is not known yet (a step entry before step 1)
            if param.by == by or (param.start == param.end and by == "epoch"):
                published[name] = value
        values = getattr(trainer, "schedule_values", None)
        if isinstance(values, dict):
            values.update(current)
        else:
            trainer.schedule_values = dict(current)
        if by == "epoch" and published and publish:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in published.items())
            log.info("schedule: epoch %s: %s", self.epoch, shown)
        log_metric = getattr(trainer, "log_metric", None) if publish else None
        for name, value in published.items():
            if log_metric is not None:
                log_metric(f"schedule/{name}", value)
            for callback in self._bindings.get(name, []):
                callback(value)
        return published

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position and plugin switch state (values follow from the position)."""
        return {"epoch": self.epoch, "step": self.step, "plugins": dict(self._plugin_state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = state.get("epoch")
        self.step = state.get("step")
        # Plugins are re-synced on the next apply(); forget the switch state so the
        # freshly loaded PluginManager gets explicit enable/disable calls.
        self._plugin_state = {}

    def __repr__(self) -> str:
        return (
            f"Schedule(enable_at={self.enable_at}, params={sorted(self.params)}, "
            f"epoch={self.epoch}, step={self.step})"
        )


_ACTIVE: Schedule | None = None


def current_schedule() -> Schedule | None:
    """The schedule that ``${schedule:NAME}`` reads from (set by activate/apply)."""
    return _ACTIVE


_NO_DEFAULT = object()


def _resolve(name: str, default: Any = _NO_DEFAULT, *, _root_: Any = None) -> Any:
    active = _ACTIVE
    if active is not None and name in active.params:
        try:
            return active.get(name)
        except ScheduleError:
            return active.params[name].start
    section = _root_.get("schedule", None) if _root_ is not None else None
    if section is not None and name in section:
        spec = section[name]
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return float(spec)
        if spec is not None and spec.get("start") is not None:
            return float(spec["start"])
    if default is not _NO_DEFAULT:
        return default
    names = active.params if active is not None else (section or {})
    have = sorted(k for k in names if not _ENABLE_RE.match(str(k)))
    raise ScheduleError(
        f"${{schedule:{name}}}: no schedule entry {name!r} (scheduled values: {have or 'none'}); "
        f"add it to the schedule or give a default: ${{schedule:{name},DEFAULT}}"
    )


def register_resolver() -> None:
    """Register the ``schedule`` OmegaConf resolver (idempotent; done at import)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("schedule"):
        OmegaConf.register_new_resolver("schedule", _resolve, use_cache=False)


def _check_int(what: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ScheduleError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_or_none(name: str, value: Any) -> int | None:
    return None if value is None else _check_int(name, value, 1)


register_resolver()
