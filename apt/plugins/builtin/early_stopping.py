"""Built-in ``early_stopping`` plugin: stop when a validation metric stops improving.

The guide's Example 2, plus: the monitored metric and direction are configurable, the
trainer is told to stop directly when it is passed in, and the counters go into
checkpoints so a resumed run keeps its patience.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["EarlyStoppingOptions", "EarlyStoppingPlugin"]

log = logging.getLogger(__name__)


@dataclass
class EarlyStoppingOptions:
    patience: int = 5  # validations without improvement before stopping
    min_delta: float = 0.001  # smallest change that counts as an improvement
    monitor: str = "val_loss"  # metric key of on_validation_end's metrics
    mode: Literal["min", "max"] = "min"


class EarlyStoppingPlugin(Plugin):
    """Stop training if validation loss doesn't improve (options: :class:`EarlyStoppingOptions`)."""

    Options = EarlyStoppingOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.patience = self.options.patience
        self.min_delta = self.options.min_delta
        self.monitor = self.options.monitor
        self.mode = self.options.mode
        self.best_loss = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.should_stop = False

    def get_name(self) -> str:
        return "early_stopping"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        """Ranges; types were checked against :class:`EarlyStoppingOptions` at creation."""
        if self.patience < 1:
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be a non-negative number, got {self.min_delta!r}")
        return True

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best_loss - self.min_delta
        return value > self.best_loss + self.min_delta

    def on_validation_end(self, metrics: Mapping[str, Any] | None = None, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        if not metrics or self.monitor not in metrics:
            return
        value = float(metrics[self.monitor])
        if self._improved(value):
            self.best_loss = value
            self.wait = 0
        else:
            self.wait += 1
        if self.wait >= self.patience and not self.should_stop:
            self.should_stop = True
            reason = (f"early_stopping: no improvement in {self.monitor} for {self.patience} validations "
                      f"(best {self.best_loss:.4g})")
            if trainer is not None:  # the summary says why it stopped
                trainer.request_stop(reason)
            log.info("%s", reason)

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "wait": self.wait, "should_stop": self.should_stop}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.wait = int(state["wait"])
        self.should_stop = bool(state["should_stop"])
