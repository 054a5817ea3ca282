"""``throughput``: tokens per second, milliseconds per step and peak memory.

Timing is taken over windows of ``every_n_steps`` steps rather than per step: on a GPU a
per-step timer would need a device sync every step and would itself slow training down.
The window is synchronised once at its end, so the numbers include queued device work.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["ThroughputOptions", "ThroughputPlugin", "peak_memory_mb"]


def peak_memory_mb(device: Any = None) -> float:
    """Peak allocated device memory (CUDA) or the process's peak RSS (CPU), in MiB."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class ThroughputOptions:
    every_n_steps: int = 10  # window length: one device sync per window


class ThroughputPlugin(Plugin):
    """Log ``throughput/tokens_per_s``, ``throughput/ms_per_step`` and ``throughput/peak_mem_mb``.

    Options: :class:`ThroughputOptions`. Tokens are the input ids of every micro-batch
    (``batch[0]``), so gradient accumulation is counted correctly. Time spent in validation
    is excluded: the window restarts after each validation.
    """

    Options = ThroughputOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.every_n_steps = self.options.every_n_steps
        self._t0: float | None = None
        self._tokens = 0
        self._steps = 0
        self.last: dict[str, float] = {}

    def get_name(self) -> str:
        return "throughput"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if self.every_n_steps < 1:
            raise ValueError(f"throughput: every_n_steps must be a positive integer, got {self.every_n_steps!r}")
        return True

    def _restart(self) -> None:
        self._t0, self._tokens, self._steps = time.perf_counter(), 0, 0

    def on_step_begin(self, **kwargs: Any) -> None:
        if self._t0 is None:
            self._restart()

    def on_batch_begin(self, batch: Any = None, **kwargs: Any) -> None:
        if batch is not None:
            ids = batch[0] if isinstance(batch, list | tuple) else batch
            self._tokens += int(ids.numel())

    def on_step_end(self, step: int | None = None, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        self._steps += 1
        if self._steps < self.every_n_steps or self._t0 is None:
            return
        device = trainer.device if trainer is not None else None
        if device is not None and str(device).startswith("cuda"):
            import torch

            torch.cuda.synchronize(device)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.last = {
            "throughput/tokens_per_s": self._tokens / elapsed,
            "throughput/ms_per_step": 1000.0 * elapsed / self._steps,
            "throughput/peak_mem_mb": peak_memory_mb(device),
        }
        if trainer is not None:
            for name, value in self.last.items():
                trainer.log_metric(name, value)
        self._restart()

    def on_validation_begin(self, **kwargs: Any) -> None:
        self._t0 = None  # the next step starts a fresh window; validation is not training
