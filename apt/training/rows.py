"""The run's metrics.csv rows: when one is written and what goes into it.

One part of the :class:`~apt.training.trainer.Trainer` (with :mod:`.progress`,
:mod:`.window` and :mod:`.checkpointing`). A row closes the metrics window every
``log_every`` steps, at each evaluation (so every val loss is in the file), at the end of
each epoch and of the run. An evaluation at a step whose
row is already written adds its columns to that row, and values plugins log in
``on_epoch_end`` describe the epoch just ended, so they go into its last row: the rows of a
run do not depend on where it was paused and resumed.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apt.training.trainer import Trainer

__all__ = ["VAL_COLUMNS", "flush_epoch_metrics", "record", "val_columns"]

log = logging.getLogger("apt.training.trainer")

#: The evaluation's metrics.csv columns.
VAL_COLUMNS = ("val_loss", "val_loss_se", "val_tokens")


def record(trainer: Trainer) -> None:
    """Write the current step's row, or add a new evaluation to the row already written."""
    rows = trainer.metrics_logger.rows
    if rows and rows[-1].get("step") == trainer.step:
        if trainer.progress.last_val_step == trainer.step:
            trainer.metrics_logger.update_last(**val_columns(trainer))
        return
    _write_row(trainer)


def flush_epoch_metrics(trainer: Trainer) -> None:
    """Values logged in ``on_epoch_end`` describe the epoch just ended: put them in its last row."""
    rows = trainer.metrics_logger.rows
    if trainer.window.logged and rows and rows[-1].get("step") == trainer.step:
        trainer.metrics_logger.update_last(**trainer.window.take_logged())


def val_columns(trainer: Trainer) -> dict[str, Any]:
    """The newest evaluation's metrics.csv columns."""
    return {k: trainer.metrics.get(k) for k in VAL_COLUMNS}


def _write_row(trainer: Trainer) -> None:
    """One metrics.csv row; the only place the train loss is moved to the host."""
    p = trainer.progress
    val = val_columns(trainer) if p.last_val_step == p.step else {}
    row = trainer.window.row(step=p.step, epoch=p.epoch, val=val, tokens_seen=p.tokens_seen, dist=trainer.dist,
                             layer_stats=getattr(trainer.model, "metrics", dict)())
    trainer.metrics.update({k: v for k, v in row.items() if v is not None})
    trainer.metrics_logger.log(row)
    log.info("step %d | epoch %d | loss %.4f%s | lr %.3g | %.0f tok/s", p.step, p.epoch,
             math.nan if row["train_loss"] is None else row["train_loss"],
             f" | val {val['val_loss']:.4f}" if val else "", row["lr"], row["tokens_per_s"])
    trainer.nonfinite.check(trainer.dist, trainer.last_checkpoint)
