"""Where a run is (the counters the loop advances and a checkpoint restores) and how long it is
(:func:`run_length`; :class:`RunLength` for what the config check and the schedule say about it).

One small record instead of a dozen trainer fields, so "what does resuming restore" has one
answer: :meth:`Progress.state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from apt.training.schema import TrainerConfig, trainer_config

__all__ = ["Progress", "RunLength", "run_length"]


@dataclass
class Progress:
    """Counters of a run; ``epoch`` and ``step`` count from 1 once begun (0: nothing done)."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    steps_in_epoch: int = 0
    epoch_open: bool = False  # on_epoch_begin fired, on_epoch_end not yet
    tokens_seen: int = 0
    train_time: float = 0.0  # seconds of training, the final evaluation excluded (all sessions)
    final_eval_time: float = 0.0  # seconds of the newest final evaluation
    best_val_loss: float = math.inf  # over the periodic evaluation windows
    best_step: int = 0
    last_val_step: int = -1  # step of the newest evaluation
    last_final_step: int = -1  # step of the newest final (whole-split) evaluation

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the saved counters (a checkpoint of an older APT may lack some: defaults)."""
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, type(f.default)(state[f.name]))


@dataclass(frozen=True)
class RunLength:
    """The run's length: ``steps`` (exact, or at most ``trainer.max_steps``), ``per_epoch``
    (None when the data decides it and the check cannot count it) and ``epochs`` (exact when
    ``per_epoch`` is known, else at most ``trainer.max_epochs``)."""

    steps: int | None
    per_epoch: int | None
    epochs: int | None

    @property
    def exact(self) -> bool:
        return self.steps is not None and self.per_epoch is not None

    def ends(self, by: str) -> str:
        """Why a position counted ``by`` (step or epoch) beyond the run is never reached."""
        if self.exact:
            return f"the run ends after {self.steps} steps, in epoch {self.epochs} ({self.per_epoch} steps per epoch)"
        if by == "epoch":
            return f"the run ends in epoch {self.epochs} at the latest (trainer.max_epochs)"
        return f"the run ends after {self.steps} steps at the latest (trainer.max_steps)"

    def last(self, by: str) -> int | None:
        """The last step or epoch the run can reach (None: unknown)."""
        return self.epochs if by == "epoch" else self.steps


def run_length(config: TrainerConfig | Mapping[str, Any], loader_batches: int) -> tuple[int, int]:
    """``(steps_per_epoch, max_steps)`` for a train loader of ``loader_batches`` micro-batches an epoch.

    The app needs the run's length before the trainer exists (the LR schedule and the
    schedule anneal over it); the trainer uses the same function.
    """
    c = trainer_config(config)
    steps_per_epoch = int(c.steps_per_epoch or max(1, loader_batches // max(1, int(c.grad_accum))))
    by_epochs = c.max_epochs * steps_per_epoch if c.max_epochs is not None else None
    if c.max_steps is not None and by_epochs is not None:
        return steps_per_epoch, min(int(c.max_steps), by_epochs)
    if c.max_steps is not None:
        return steps_per_epoch, int(c.max_steps)
    if by_epochs is not None:
        return steps_per_epoch, by_epochs
    raise ValueError("set trainer.max_steps or trainer.max_epochs")
