"""``checkpoint``: periodic checkpoints and the best one by a monitored metric.

The trainer already saves at the end (and every ``trainer.checkpoint_every`` steps, keeping
the newest ``keep_last``). This plugin adds what a researcher asks for next: a checkpoint
every N epochs, and ``best.pt``, rewritten whenever the monitored validation metric
improves, which retention never deletes. Files are full APT checkpoints (resumable with
``ckpt_path=``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["CheckpointOptions", "CheckpointPlugin"]

log = logging.getLogger(__name__)


@dataclass
class CheckpointOptions:
    every_n_steps: int | None = None  # a checkpoint every N steps (trainer retention applies)
    every_n_epochs: int | None = 1  # a checkpoint every N epochs
    monitor: str | None = "val_loss"  # validation metric of best.pt; None: no best.pt
    mode: Literal["min", "max"] = "min"
    filename: str = "best.pt"
    dirpath: str | None = None  # None: the trainer's checkpoint directory


class CheckpointPlugin(Plugin):
    """Save every ``every_n_steps`` / ``every_n_epochs`` and the best by ``monitor``.

    Options: :class:`CheckpointOptions`.
    """

    Options = CheckpointOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        o = self.options
        self.every_n_steps = o.every_n_steps
        self.every_n_epochs = o.every_n_epochs
        self.monitor = o.monitor
        self.mode = o.mode
        self.filename = o.filename
        self.dirpath = o.dirpath
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step: int | None = None
        self.best_path: str | None = None

    def get_name(self) -> str:
        return "checkpoint"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        for key in ("every_n_steps", "every_n_epochs"):
            n = getattr(self, key)
            if n is not None and n < 1:
                raise ValueError(f"checkpoint: {key} must be a positive integer or null, got {n!r}")
        return True

    def _directory(self, trainer: TrainerView) -> Path | None:
        if self.dirpath:
            return Path(self.dirpath)
        manager = trainer.checkpoints
        return manager.directory if manager is not None else None

    def on_step_end(self, step: int | None = None, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        if self.every_n_steps and step and step % self.every_n_steps == 0 and trainer is not None:
            self._save_periodic(trainer)

    def on_epoch_end(self, epoch: int | None = None, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        if (
            self.every_n_epochs
            and epoch
            and epoch % self.every_n_epochs == 0
            and trainer is not None
        ):
            self._save_periodic(trainer)

    def _save_periodic(self, trainer: TrainerView) -> None:
        if trainer.checkpoints is None:
            log.warning(
                "checkpoint: the trainer has no checkpoint directory (no out_dir); not saved"
            )
            return
        trainer.save()

    def _improved(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_validation_end(
        self,
        metrics: Mapping[str, Any] | None = None,
        trainer: TrainerView | None = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.monitor or not metrics or self.monitor not in metrics or trainer is None:
            return
        value = float(metrics[self.monitor])
        if not math.isfinite(value) or not self._improved(value):
            return
        self.best, self.best_step = value, step
        directory = self._directory(trainer)
        if directory is None:
            return
        from apt.training.checkpoint import FORMAT, save_checkpoint

        path = save_checkpoint(
            {"format": FORMAT, **trainer.state_dict()}, directory / self.filename
        )
        self.best_path = str(path)
        trainer.log_metric(f"checkpoint/best_{self.monitor}", value)
        log.info(
            "checkpoint: %s improved to %.4f at step %s -> %s", self.monitor, value, step, path
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "best_path": self.best_path}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state.get("best", self.best))
        self.best_step = state.get("best_step")
        self.best_path = state.get("best_path")
