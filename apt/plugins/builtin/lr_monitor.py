"""``lr_monitor``: log the learning rate of each optimizer parameter group.

A warmup/decay schedule bug (a flat LR, a decay that never starts) is invisible in the
loss for hundreds of steps; a column in metrics.csv shows it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["LRMonitorOptions", "LRMonitorPlugin"]


@dataclass
class LRMonitorOptions:
    # metrics.csv gets a row every trainer.log_every steps and at epoch ends, with the latest value
    every_n_steps: int = 1


class LRMonitorPlugin(Plugin):
    """Log ``lr`` (and ``lr/group<i>`` when groups differ) every ``every_n_steps`` steps.

    Options: :class:`LRMonitorOptions`.
    """

    Options = LRMonitorOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.every_n_steps = self.options.every_n_steps

    def get_name(self) -> str:
        return "lr_monitor"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if self.every_n_steps < 1:
            raise ValueError(f"lr_monitor: every_n_steps must be a positive integer, got {self.every_n_steps!r}")
        return True

    def learning_rates(self, optimizer: Any) -> dict[str, float]:
        """``{"lr": first group's lr}`` plus one entry per group when they differ."""
        lrs = [float(g["lr"]) for g in optimizer.param_groups]
        out = {"lr": lrs[0]}
        if len(set(lrs)) > 1:
            out.update({f"lr/group{i}": lr for i, lr in enumerate(lrs)})
        return out

    def on_step_end(
        self, step: int | None = None, trainer: TrainerView | None = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        if trainer is None or optimizer is None or step is None or step % self.every_n_steps:
            return
        for name, value in self.learning_rates(optimizer).items():
            trainer.log_metric(name, value)

    def on_epoch_end(self, trainer: TrainerView | None = None, optimizer: Any = None, **kwargs: Any) -> None:
        if trainer is not None and optimizer is not None:
            for name, value in self.learning_rates(optimizer).items():
                trainer.log_metric(name, value)
