"""The Hydra ``Sweeper`` class of ``hydra/sweeper=optuna``; the work is :class:`apt.sweeps.optuna_study.OptunaStudySweeper`.

This module imports neither Optuna nor torch: Hydra imports every ``hydra_plugins`` module
when it starts, for every command, and a missing Optuna must only matter to a sweep that
uses it.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

__all__ = ["OptunaSweeper"]


class OptunaSweeper(Sweeper):
    """Runs an Optuna study whose trials are Hydra jobs (keys: see ``config.OptunaSweeperConf``)."""

    def __init__(self, **options: Any) -> None:
        from apt.sweeps.optuna_study import OptunaStudySweeper

        self.sweeper = OptunaStudySweeper(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
