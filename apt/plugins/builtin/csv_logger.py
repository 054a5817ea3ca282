"""``csv``: one row per epoch in ``epochs.csv``.

The trainer's ``metrics.csv`` has a row every ``log_every`` steps; comparing runs epoch by
epoch (and the per-epoch means plugins such as ``moe`` log at epoch end) is easier from a
file with exactly one row per epoch. Its hooks run last (priority -100) so values other
plugins log in ``on_epoch_end`` are included. Rows are kept in the plugin's checkpoint
state, so a resumed run's file has every epoch once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["CSVLoggerOptions", "CSVLoggerPlugin"]


@dataclass
class CSVLoggerOptions:
    filename: str = "epochs.csv"  # relative to the run directory
    columns: list[str] | None = None  # metric names to keep; None: all


class CSVLoggerPlugin(Plugin):
    """Write ``epoch, step`` and every numeric trainer metric at each epoch end.

    Options: :class:`CSVLoggerOptions`.
    """

    Options = CSVLoggerOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.filename = self.options.filename
        self.columns = self.options.columns
        self.rows: list[dict[str, Any]] = []
        self._logger: Any = None

    def get_name(self) -> str:
        return "csv"

    def get_version(self) -> str:
        return "1.0.0"

    def get_priority(self) -> int:
        return -100

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if not self.filename:
            raise ValueError("csv: filename must be a non-empty path")
        return True

    def path_for(self, trainer: TrainerView | None) -> Path:
        path = Path(self.filename)
        out_dir = trainer.out_dir if trainer is not None else None
        return path if path.is_absolute() or out_dir is None else Path(out_dir) / path

    def on_epoch_end(
        self, epoch: int | None = None, step: int | None = None, trainer: TrainerView | None = None, **kwargs: Any
    ) -> None:
        if trainer is None:
            return
        from apt.training.metrics import MetricsLogger

        row: dict[str, Any] = {"epoch": epoch, "step": step}
        for key, value in dict(trainer.metrics).items():
            if key in row or (self.columns is not None and key not in self.columns):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            row[key] = number
        self.rows.append(row)
        if self._logger is None:
            self._logger = MetricsLogger(self.path_for(trainer), self.rows[:-1])
        self._logger.log(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self._logger = None
