"""Settings the run's length decides: those that can never take effect are named warnings.

A run is ``trainer.max_steps`` optimizer steps of ``trainer.steps_per_epoch`` each (or
``trainer.max_epochs`` epochs). A warmup longer than the run, an ``enable_<plugin>_at_*``
entry after its end, an anneal that stops short and a plugin's ``every_n_steps`` /
``every_n_epochs`` longer than the run are accepted but do nothing (or not what they say).
:func:`length_warnings` names each, one line, from :func:`run_length_estimate`: the config
check knows the length exactly where the data's size is known without reading it (synthetic
data, a prepared token directory, or ``trainer.steps_per_epoch``), else bounds from
``trainer.max_steps`` / ``trainer.max_epochs``; the build step knows it exactly and logs
what the check could not see. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from apt.training.progress import RunLength, run_length

__all__ = ["EVERY_OPTIONS", "RunLength", "length_warnings", "run_length_estimate"]

#: Plugin options that count positions: ``option -> the unit it counts``.
EVERY_OPTIONS = {"every_n_steps": "step", "every_n_epochs": "epoch"}


def run_length_estimate(trainer: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> RunLength:
    """The length the config check can tell: exact when the epoch length is known (set, or
    counted from the data's size as :class:`~apt.data.loader.BatchLoader` counts it)."""
    max_steps, max_epochs = _positive(trainer.get("max_steps")), _positive(trainer.get("max_epochs"))
    per_epoch = _positive(trainer.get("steps_per_epoch"))
    batches = _loader_batches(data) if per_epoch is None and data is not None else None
    if per_epoch is not None or batches is not None:
        try:
            per_epoch, steps = run_length(trainer, batches or 1)
        except (TypeError, ValueError):  # a bad trainer section: its own check reports it
            return RunLength(None, None, None)
        return RunLength(steps, per_epoch, -(-steps // per_epoch))
    return RunLength(max_steps, None, max_epochs)


def length_warnings(length: RunLength, optim: Mapping[str, Any], schedule: Any,
                    plugins: Iterable[tuple[str, Any]]) -> list[str]:
    """One line per setting that the run of ``length`` never reaches: the warmup, the
    ``schedule``'s entries (a :class:`~apt.schedule.Schedule`) and the ``every_n_*`` options of
    ``plugins`` (``(name, plugin)`` pairs)."""
    out = []
    warmup = optim.get("warmup_steps")
    if isinstance(warmup, int) and length.steps is not None and warmup > length.steps:
        run = f"{length.steps} steps" if length.exact else f"at most {length.steps} steps"
        out.append(f"optim.warmup_steps={warmup} is longer than the run ({run}): the learning rate is still "
                   "warming up when the run ends and never reaches optim.optimizer.lr")
    if schedule is not None:
        out += [f"schedule: {line}" for line in schedule.unreachable(length)]
    for name, plugin in plugins:
        options = getattr(plugin, "options", None)
        if not is_dataclass(options):
            continue
        for f in fields(options):
            by, value = EVERY_OPTIONS.get(f.name), getattr(options, f.name)
            last = length.last(by) if by else None
            if last is not None and isinstance(value, int) and value > last:
                out.append(f"plugin {name!r}: {f.name}={value} is never reached: {length.ends(by)}")
    return out


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _loader_batches(d: Mapping[str, Any]) -> int | None:
    """Micro-batches in one pass over the train split, where the size is known unread."""
    from apt.data.checks import train_tokens

    n, block, batch = train_tokens(d), _positive(d.get("block_size")), _positive(d.get("batch_size"))
    if n is None or block is None or batch is None:
        return None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    windows = (n - 1) // block - 1  # as BatchLoader counts them
    return windows // (batch * world) if windows >= batch * world else None
