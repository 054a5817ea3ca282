"""``tensorboard``: every metrics.csv column as a TensorBoard scalar.

Rather than choosing scalars itself, the plugin mirrors the trainer's metrics rows (train
and val loss, lr, tokens/s, router statistics, schedule values, whatever plugins log), so
TensorBoard and metrics.csv never disagree. A row is written once it is final (the next
row exists, or training ended), because the trainer fills in a row's val loss and
epoch-end values after writing it. Needs the ``tensorboard`` package
(``pip install tensorboard``); a resumed run purges events after its resume step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt.plugins.base import Plugin
from apt.plugins.builtin.tracking import final_rows, metric_values
from apt.plugins.trainer_view import TrainerView

__all__ = ["TensorBoardOptions", "TensorBoardPlugin"]


@dataclass
class TensorBoardOptions:
    log_dir: str | None = None  # None: <run dir>/tensorboard
    flush_secs: int = 30  # seconds between writes of the event file


class TensorBoardPlugin(Plugin):
    """Mirror metrics rows to TensorBoard event files (options: :class:`TensorBoardOptions`)."""

    Options = TensorBoardOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.log_dir = self.options.log_dir
        self.flush_secs = self.options.flush_secs
        self.rows_written = 0
        self.writer: Any = None

    def get_name(self) -> str:
        return "tensorboard"

    def get_version(self) -> str:
        return "1.0.0"

    def get_dependencies(self) -> list[str]:
        return ["tensorboard>=2.10"]

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if self.flush_secs <= 0:
            raise ValueError(f"tensorboard: flush_secs must be a positive integer, got {self.flush_secs!r}")
        return True

    def directory(self, trainer: TrainerView | None = None) -> Path:
        if self.log_dir:
            return Path(self.log_dir)
        out_dir = trainer.out_dir if trainer is not None else None
        return Path(out_dir) / "tensorboard" if out_dir is not None else Path("tensorboard")

    def on_train_begin(self, trainer: TrainerView | None = None, step: int | None = None, **kwargs: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = step + 1 if step else None  # resumed: drop events logged after the checkpoint
        self.writer = SummaryWriter(
            str(self.directory(trainer)), flush_secs=self.flush_secs, purge_step=purge
        )

    def _mirror(self, trainer: TrainerView | None, final: bool = False) -> None:
        if self.writer is None:
            return
        rows, self.rows_written = final_rows(trainer, self.rows_written, final=final)
        for row in rows:
            for key, number in metric_values(row).items():
                if key != "epoch":
                    self.writer.add_scalar(key, number, int(row["step"]))

    def on_step_end(self, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        self._mirror(trainer)

    def on_train_end(self, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        self._mirror(trainer, final=True)
        if self.writer is not None:
            self.writer.flush()

    def teardown(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        super().teardown()

    def state_dict(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rows_written = int(state.get("rows_written", 0))
