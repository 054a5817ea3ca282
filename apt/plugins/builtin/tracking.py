"""What the experiment-tracker plugins (``mlflow``, ``wandb``) share: one run per APT run.

A tracker plugin records

- the composed run config, flattened to dotted keys (``model.d_model``), as parameters,
  when training begins (``on_train_begin``);
- every metrics.csv row (train and val loss, lr, tokens/s, plugin columns) at its step,
  once the row is final (the trainer fills a row's val loss after writing it), mirrored
  from ``trainer.metrics_logger`` like the tensorboard plugin does;
- ``loss.png`` and ``summary.json`` of the run directory as artifacts, at ``teardown``:
  the trainer plots after ``on_train_end`` and the app writes summary.json after training
  returns, and the app tears the plugins down after both. A file that is not there
  (matplotlib missing, a run that failed) is named in a log line instead.

The run ends FINISHED after a normal end, KILLED after SIGINT/SIGTERM, FAILED otherwise. Its
id is checkpoint state, so a resumed run continues the same tracker run, sending only the
rows after the last step the tracker already has (the checkpoint is written before the last
rows are sent, and rows after it are recomputed identically). Under torchrun rank 0 alone records. If the tracker cannot start a run, the
run fails before its first step with that reason (``trainer.fail``: summary.json says why,
exit status 1), because a run the user asked to track is not trained untracked. The tracker's package is an optional extra: selecting the
plugin without it is an error naming ``pip install 'apt[<extra>]'``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["ARTIFACTS", "TrackerPlugin", "final_rows", "flatten_config", "metric_values", "run_label"]

log = logging.getLogger(__name__)

#: Run-directory files uploaded at the end (written after on_train_end; see the module doc).
ARTIFACTS = ("loss.png", "summary.json")


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"d_model": 64}}`` -> ``{"model.d_model": 64}``; lists become JSON text."""
    out: dict[str, Any] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        if not config and prefix:
            out[prefix[:-1]] = "{}"
        return out
    value = json.dumps(config) if isinstance(config, list | tuple) else config
    out[prefix[:-1]] = value
    return out


def metric_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, ``step`` left out (it is the x axis)."""
    out = {}
    for key, value in row.items():
        if key == "step" or value is None or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def final_rows(trainer: TrainerView | None, written: int, *, final: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Metrics rows after the first ``written`` that no longer change, and the new count.

    A row is final once the next one exists (or training ended: ``final``), because the
    trainer fills in a row's val loss and epoch-end values after writing it.
    """
    if trainer is None:
        return [], written
    logger = trainer.metrics_logger
    end = len(logger.rows) if final else len(logger.rows) - 1
    return [dict(r) for r in logger.rows[written:end]], max(written, end)


def run_label(trainer: TrainerView | None) -> str:
    """The tracker's run name by default: the run directory, relative to the current one."""
    out_dir = trainer.out_dir if trainer is not None else None
    if out_dir is None:
        return "apt"
    try:
        return os.path.relpath(out_dir)
    except ValueError:  # on another drive (Windows)
        return str(out_dir)


class TrackerPlugin(Plugin):
    """Base of the tracker plugins: the lifecycle above; subclasses talk to their service."""

    #: Import name of the tracker's package, and the APT extra that installs it.
    package: ClassVar[str] = ""
    extra: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.run_id: str | None = None
        self.rows_written = 0
        self.sent_step = 0  # the tracker has every row up to this step
        self._trainer: TrainerView | None = None
        self._active = False  # a run started by this process (not one restored from a checkpoint)
        self._ended = False

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if importlib.util.find_spec(self.package) is None:
            raise ValueError(f"plugin {self.get_name()!r} needs the {self.package} package: "
                             f"pip install 'apt[{self.extra}]'")
        return True

    # -- the service (subclasses) --------------------------------------------------------
    def start_run(self, params: dict[str, Any], trainer: TrainerView | None, resumed: bool) -> tuple[str, int]:
        """Open a run and log ``params``, or (``resumed`` with ``self.run_id``) reopen that run.

        Returns the run id and the last step the run already has metrics for (0: none).
        """
        raise NotImplementedError

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def log_artifact(self, path: Path) -> None:
        raise NotImplementedError

    def end_run(self, status: str) -> None:
        """``status``: ``FINISHED``, ``KILLED`` or ``FAILED``."""
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------------------
    def on_train_begin(self, config: Mapping[str, Any] | None = None, trainer: TrainerView | None = None,
                       step: int | None = None, **kwargs: Any) -> None:
        if trainer is not None and not trainer.dist.is_main:
            return
        self._trainer = trainer
        try:
            self.run_id, self.sent_step = self.start_run(flatten_config(dict(config or {})), trainer,
                                                         resumed=bool(step))
        except Exception as exc:
            if trainer is not None:  # a run the user asked to track is not trained untracked
                trainer.fail(f"{self.get_name()}: could not start a run: {exc}")
            raise
        self._active = True
        log.info("%s: recording run %s", self.get_name(), self.run_id)

    def on_step_end(self, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        self._mirror(trainer)

    def on_train_end(self, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        self._mirror(trainer, final=True)
        self._ended = True

    def teardown(self) -> None:
        if self._active:
            self._active = False
            trainer = self._trainer
            out_dir = trainer.out_dir if trainer is not None else None
            for name in ARTIFACTS if out_dir is not None else ():
                path = Path(out_dir) / name
                if path.is_file():
                    self.log_artifact(path)
                else:
                    log.info("%s: %s not uploaded: it was not written", self.get_name(), path)
            interrupted = trainer is not None and trainer.interrupted_by is not None
            self.end_run("KILLED" if interrupted else "FINISHED" if self._ended else "FAILED")
        super().teardown()

    def _mirror(self, trainer: TrainerView | None, final: bool = False) -> None:
        if not self._active:
            return
        rows, self.rows_written = final_rows(trainer, self.rows_written, final=final)
        rows = [r for r in rows if int(r["step"]) > self.sent_step]
        if rows:
            self.log_rows(rows)
            self.sent_step = int(rows[-1]["step"])

    # -- checkpoint state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "rows_written": self.rows_written}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.rows_written = int(state.get("rows_written", 0))
