"""TrainerView: what a plugin may use of the trainer every event passes as ``trainer``.

Plugins used to receive ``trainer: Any`` and probe it with ``hasattr``; this Protocol names the
part of :class:`apt.training.trainer.Trainer` that plugins rely on, so a hook can be typed
``trainer: TrainerView | None = None`` (None: the event was triggered by hand, outside a run)
and a type checker sees a misspelt method. The real trainer has every member, always
(``tests/plugins/test_trainer_view.py`` checks it); a test stand-in implements the members its
plugin uses. Runtime-checkable so that check is one ``isinstance``. Importing this module does
not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from apt.training.checkpoint import CheckpointManager
    from apt.training.distributed import DistContext
    from apt.training.metrics import MetricsLogger

__all__ = ["TrainerView"]


@runtime_checkable
class TrainerView(Protocol):
    """The trainer as plugins see it: its state, where it writes, and what they may ask of it."""

    #: Set (or use :meth:`request_stop`) to end training after the current step.
    should_stop: bool
    #: The latest value of every metric (train/val losses, ``log_metric`` values).
    metrics: dict[str, Any]
    #: The run directory (metrics.csv, checkpoints/), or None when nothing is written.
    out_dir: Path | None
    device: torch.device
    #: The process group (``dist.is_main``: rank 0, the one that writes and reports).
    dist: DistContext
    #: The checkpoint directory's manager; None when the run saves nothing.
    checkpoints: CheckpointManager | None
    #: The metrics.csv rows so far (``metrics_logger.rows``), for plugins that mirror them.
    metrics_logger: MetricsLogger
    #: The autocast precision of the forward pass (bf16 on CUDA), None for full precision.
    autocast_dtype: torch.dtype | None

    @property
    def step(self) -> int:
        """Optimizer steps done (inside a step's events: the step being run)."""
        ...

    @property
    def epoch(self) -> int: ...

    @property
    def interrupted_by(self) -> int | None:
        """The signal number that paused the run, if any."""
        ...

    def add_loss(self, name: str, tensor: torch.Tensor) -> None:
        """Add ``tensor`` to this micro-batch's loss (before backward); logged as ``loss/<name>``."""
        ...

    def log_metric(self, name: str, value: Any) -> None:
        """Record a value for the next metrics.csv row."""
        ...

    def add_param_group(self, params: Iterable[torch.nn.Parameter], **options: Any) -> None:
        """Give new parameters to the optimizer mid-run, on the same LR schedule."""
        ...

    def request_stop(self, reason: str = "requested") -> None:
        """End the run after this step (then the final evaluation and checkpoint)."""
        ...

    def fail(self, reason: str) -> None:
        """End the run as failed after this step; the app exits 1 with ``reason``."""
        ...

    def skip_step(self, reason: str) -> None:
        """Drop this step's update (call before the optimizer step, e.g. in ``on_backward_end``)."""
        ...

    def save(self) -> Path:
        """Write a checkpoint of the current step; returns its path."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint of the current step holds."""
        ...
