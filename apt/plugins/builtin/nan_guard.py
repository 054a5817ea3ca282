"""``nan_guard``: skip optimizer steps whose loss (or gradients) are not finite.

One overflow or a bad batch should not poison the weights: the guard drops that step's
gradients before ``optimizer.step()`` (parameters without a gradient are not updated, and
their optimizer moments are left alone), counts it, and after ``max_skips`` such steps
saves a checkpoint of the last good weights and stops the run with a message that says
what happened. The check costs one host sync per step (two with ``check_grads``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apt.plugins.base import Plugin

if TYPE_CHECKING:  # torch is imported by the hooks: checking a config must not import it
    import torch

__all__ = ["NaNGuardOptions", "NaNGuardPlugin"]

log = logging.getLogger(__name__)


@dataclass
class NaNGuardOptions:
    max_skips: int = 10  # skipped steps (over the whole run, kept across resume) before stopping
    check_grads: bool = False  # also skip when the loss is finite but a gradient is not


class NaNGuardPlugin(Plugin):
    """Skip non-finite steps; stop after ``max_skips`` of them (options: :class:`NaNGuardOptions`)."""

    Options = NaNGuardOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_skips = self.options.max_skips
        self.check_grads = self.options.check_grads
        self.skipped = 0
        self.skipped_steps: list[int] = []
        self._finite: torch.Tensor | None = None  # AND over this step's micro-batch losses
        self._bad = False

    def get_name(self) -> str:
        return "nan_guard"

    def get_version(self) -> str:
        return "1.0.0"

    def get_priority(self) -> int:
        return 100  # before other on_backward_end hooks (clipping) see the gradients

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if self.max_skips < 1:
            raise ValueError(f"nan_guard: max_skips must be a positive integer, got {self.max_skips!r}")
        return True

    def on_backward_begin(self, loss: torch.Tensor | None = None, **kwargs: Any) -> None:
        import torch

        if loss is not None:
            ok = torch.isfinite(loss.detach()).all()
            self._finite = ok if self._finite is None else self._finite & ok

    def on_backward_end(
        self, model: torch.nn.Module | None = None, step: int | None = None, **kwargs: Any
    ) -> None:
        import torch

        finite = bool(self._finite) if self._finite is not None else True
        self._finite = None
        if finite and self.check_grads and model is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads:
                norms = torch.stack(torch._foreach_norm(grads))
                finite = bool(torch.isfinite(norms).all())
        self._bad = not finite
        if self._bad and model is not None:
            for p in model.parameters():
                p.grad = None  # optimizer.step() leaves these parameters untouched

    def on_step_end(self, step: int | None = None, trainer: Any = None, **kwargs: Any) -> None:
        if not self._bad:
            return
        self._bad = False
        self.skipped += 1
        self.skipped_steps.append(int(step or 0))
        log.warning(
            "nan_guard: non-finite %s at step %s; step skipped (%d/%d)",
            "loss or gradient" if self.check_grads else "loss",
            step,
            self.skipped,
            self.max_skips,
        )
        if trainer is None:
            return
        trainer.log_metric("nan_guard/skipped", self.skipped)
        if self.skipped >= self.max_skips:
            where = ""
            if getattr(trainer, "checkpoints", None) is not None:
                where = f"; weights of the last good step saved to {trainer.save()}"
            reason = (
                f"nan_guard: {self.skipped} steps had a non-finite loss (steps "
                f"{self.skipped_steps[-5:]}...); stopping{where}. Lower the learning rate, "
                "check the data, or use fp32"
            )
            log.error(reason)
            self.should_stop = True
            trainer.request_stop(reason)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.skipped_steps = [int(s) for s in state.get("skipped_steps", [])]
