"""``apt hooks``, ``apt schedule`` and ``apt check``: what a composed config will do.

Each command composes the config ``train.py`` would get (:func:`apt.compose.compose`) and
then runs the same code path the app runs up to (not including) building anything, so
what it prints is what the run will do rather than a second opinion: ``hooks`` runs the
config check (:func:`apt.checks.check_run`, which sets the plugins up) and reads the hook
manager, ``check`` is :func:`apt.app.check_config`, train.py's own preflight.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.compose import compose

__all__ = [
    "LOOP_ORDER",
    "format_hooks",
    "hook_table",
    "is_config_error",
    "plugin_manager_for",
    "schedule_for",
    "schedule_report",
]


def is_config_error(exc: BaseException) -> bool:
    """Errors that mean "this config is wrong" (print one line) rather than a bug (traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from apt.core.registry import RegistryError
    from apt.plugins import PluginError
    from apt.schedule import ScheduleError

    return isinstance(exc, HydraException | OmegaConfBaseException | RegistryError | PluginError
                      | ScheduleError | ValueError | KeyError)


def _container(node: Any) -> dict[str, Any]:
    """A config section as a plain dict (``{}`` for a missing or empty one)."""
    if node is None:
        return {}
    out = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(out, Mapping):
        raise ValueError(f"expected a mapping, got {out!r}")
    return dict(out)


# -- hooks ---------------------------------------------------------------------------------
def plugin_manager_for(cfg: DictConfig, out_dir: Path) -> Any:
    """The run's PluginManager with the config's plugins created and set up, as the app does.

    It is the config check itself (:func:`apt.checks.check_run`), so hooks are registered
    by the same code, in the same order, as in a run. Relative ``*_file``/``*_dir`` options
    point into ``out_dir``, so setting plugins up writes nothing where the command runs.
    """
    from apt.checks import check_run

    return check_run(cfg, plugin_dir=out_dir).plugins


#: Events in the order one training run first fires them (apt/training/trainer.py).
LOOP_ORDER: tuple[str, ...] = (
    "on_model_init", "on_checkpoint_load", "on_train_begin", "on_epoch_begin",
    "on_step_begin", "on_batch_begin", "on_batch_end", "on_backward_begin", "on_backward_end",
    "on_optimizer_step", "on_step_end", "on_validation_begin", "on_validation_end",
    "on_epoch_end", "on_checkpoint_save", "on_train_end",
)


def hook_table(overrides: Sequence[str], config_dir: str | None = None, *,
               all_events: bool = False) -> list[dict[str, Any]]:
    """Per event, in loop order, the hooks that will run, in firing order.

    Returns ``[{"event", "hooks": [{"name", "plugin", "priority", "condition",
    "enabled_from"}]}]``; ``enabled_from`` is the schedule's ``"epoch N"``/``"step N"``
    for a plugin switched on later, else ``None`` (on from the start).
    """
    from apt.plugins import EVENTS

    cfg = compose(overrides, config_dir)
    with tempfile.TemporaryDirectory(prefix="apt-hooks-") as scratch:
        manager = plugin_manager_for(cfg, Path(scratch))
        try:
            hm = manager.hook_manager
            enable_at = _enable_at(cfg)
            known = [*LOOP_ORDER, *(e for e in EVENTS if e not in LOOP_ORDER)]
            extra = [e for e in hm.events() if e not in known]  # custom events plugins use
            table = []
            for event in [*known, *extra]:
                hooks = [h for h in hm.list_hooks(event) if not h.disabled]
                if hooks or all_events:
                    table.append({"event": event, "hooks": [
                        {"name": h.name, "plugin": h.plugin, "priority": h.priority,
                         "condition": h.condition, "enabled_from": enable_at.get(h.plugin or "")}
                        for h in hooks]})
        finally:
            manager.teardown_all()  # plugins close what setup opened
    return table


def _enable_at(cfg: DictConfig) -> dict[str, str]:
    """``{plugin: "epoch 2"}`` for plugins the schedule switches on later."""
    from apt.schedule import Schedule

    raw = _container(cfg.get("schedule"))
    t = cfg.trainer  # the horizon does not matter for enablement; as in the config check
    sched = Schedule(dict(raw), max_epochs=t.get("max_epochs") or 1,
                     max_steps=t.get("max_steps") or 1)
    return {p: f"{by} {at}" for p, (by, at) in sched.enable_at.items()}


def format_hooks(table: list[dict[str, Any]]) -> str:
    if not table:
        return "no hooks: the config selects no plugins that register any"
    lines = []
    for entry in table:
        lines.append(entry["event"])
        if not entry["hooks"]:
            lines.append("  (none)")
        for i, h in enumerate(entry["hooks"], 1):
            notes = [f"plugin {h['plugin'] or '-'}", f"priority {h['priority']}"]
            if h["condition"]:
                notes.append(f"when {h['condition']}")
            if h["enabled_from"]:
                notes.append(f"from {h['enabled_from']}")
            lines.append(f"  {i}. {h['name']}  [{', '.join(notes)}]")
    return "\n".join(lines)


# -- schedule ------------------------------------------------------------------------------
def _horizon(cfg: DictConfig, epochs: int | None) -> tuple[int | None, int | None]:
    """(max_epochs, max_steps) of the run, as far as the config alone tells them.

    Without ``trainer.max_epochs`` the number of epochs depends on the dataset size
    (steps per epoch); ``trainer.steps_per_epoch`` or ``--epochs`` then supplies it.
    """
    t = cfg.trainer
    max_steps = t.get("max_steps")
    max_epochs = epochs if epochs is not None else t.get("max_epochs")
    spe = t.get("steps_per_epoch")
    if max_epochs is None and max_steps and spe:
        max_epochs = math.ceil(max_steps / spe)
    if max_steps is None and max_epochs and spe:
        max_steps = max_epochs * spe
    return max_epochs, max_steps


def schedule_for(cfg: DictConfig, epochs: int | None = None) -> Any:
    from apt.schedule import Schedule

    max_epochs, max_steps = _horizon(cfg, epochs)
    raw = _container(cfg.get("schedule"))
    return Schedule(dict(raw), max_epochs=max_epochs, max_steps=max_steps)


def schedule_report(overrides: Sequence[str], config_dir: str | None = None, *,
                    by: str = "epoch", epochs: int | None = None, png: str | None = None) -> str:
    """The schedule as a text table (one row per epoch or step), optionally plotted to ``png``."""
    from apt.schedule import ScheduleError

    cfg = compose(overrides, config_dir)
    if _horizon(cfg, epochs)[0] is None:
        raise ScheduleError(
            "the number of epochs depends on the dataset size here: set trainer.max_epochs "
            "or trainer.steps_per_epoch, or pass --epochs N")
    sched = schedule_for(cfg, epochs)
    if not sched.params and not sched.scheduled_plugins:
        text = "empty schedule: every selected plugin is on from the start; nothing anneals"
    else:
        text = sched.table(by=by)
    plugins = list(_container(cfg.get("plugin")))
    unused = [p for p in sched.scheduled_plugins if p not in plugins]
    if unused:
        text += (f"\nnote: {unused} scheduled but not selected (plugin={plugins}); "
                 "those entries have no effect")
    if png:
        text += f"\nplot: {_plot_schedule(sched, by, png)}"
    return text


def _plot_schedule(sched: Any, by: str, path: str) -> str:
    from apt.plotting import MISSING_HINT, pyplot

    plt = pyplot(path)
    if plt is None:
        return f"{path} not drawn: {MISSING_HINT}"

    horizon = sched.max_epochs if by == "epoch" else sched.max_steps
    xs = list(range(1, int(horizon) + 1))
    params = [n for n, s in sched.params.items() if s.by == by or s.start == s.end]
    plugins = list(sched.scheduled_plugins)
    rows = max(1, len(params) + (1 if plugins else 0))  # an empty schedule: one empty panel
    fig, axes = plt.subplots(rows, 1, figsize=(7, 1.8 * rows + 0.6), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], params, strict=False):
        ax.plot(xs, [sched.get(name, **{by: x}) for x in xs], marker="o" if by == "epoch" else None)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    if plugins:
        ax = axes[-1, 0]
        for i, p in enumerate(plugins):
            on = [x for x in xs if sched.should_enable_plugin(p, **{by: x})]
            ax.broken_barh([(x - 0.5, 1) for x in on], (i - 0.4, 0.8))
        ax.set_yticks(range(len(plugins)), plugins)
        ax.set_ylabel("enabled")
    axes[-1, 0].set_xlabel(by)
    if by == "epoch" and len(xs) <= 30:
        axes[-1, 0].set_xticks(xs)
    fig.suptitle("Schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
