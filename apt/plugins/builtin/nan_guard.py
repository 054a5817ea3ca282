"""``nan_guard``: skip optimizer steps whose loss (or gradients) are not finite.

One overflow or a bad batch should not poison the weights: the guard drops that step's
update (``trainer.skip_step``: no optimizer step, the moments are left alone), counts it,
and after ``max_skips`` such steps puts back the weights that last gave a finite loss,
saves them as the run's checkpoint and stops the run with a message that says what
happened. Those are the weights a finite loss was computed with, not merely finite ones:
weights blown up to 1e20 are finite, but every loss after them is not.

Cost: one host sync per step (two with ``check_grads``), and one copy of the weights on the
device, refreshed every step whose loss is finite. The copy is not checkpointed: after a
resume the guard knows the last finite weights from the first finite step on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

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
        self._good: dict[str, torch.Tensor] | None = None  # weights of the newest finite loss
        self._good_step: int | None = None

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

    def on_backward_end(self, model: torch.nn.Module | None = None, step: int | None = None,
                        trainer: TrainerView | None = None, **kwargs: Any) -> None:
        import torch

        finite = bool(self._finite) if self._finite is not None else True
        self._finite = None
        if finite and self.check_grads and model is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads:
                norms = torch.stack(torch._foreach_norm(grads))
                finite = bool(torch.isfinite(norms).all())
        self._bad = not finite
        if model is None:
            return
        if finite:
            self._remember(model, step)
        elif trainer is not None:
            trainer.skip_step("nan_guard: non-finite loss")
        else:  # a loop of one's own: optimizer.step() leaves parameters without a gradient alone
            for p in model.parameters():
                p.grad = None

    def _remember(self, model: torch.nn.Module, step: int | None) -> None:
        """Copy the weights this step's finite loss was computed with (before its update)."""
        import torch

        current = model.state_dict()
        same = self._good is not None and self._good.keys() == current.keys() and all(
            self._good[k].shape == v.shape for k, v in current.items())
        with torch.no_grad():
            if same:
                for k, v in current.items():
                    self._good[k].copy_(v)
            else:  # first step, or the layout changed (moe upcycling)
                self._good = {k: v.detach().clone() for k, v in current.items()}
        self._good_step = step

    def on_step_end(self, step: int | None = None, trainer: TrainerView | None = None, model: torch.nn.Module | None = None,
                    **kwargs: Any) -> None:
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
            if self._good is not None and model is not None:
                model.load_state_dict(self._good)
                where = f"; the weights step {self._good_step}'s finite loss was computed with are restored"
                if trainer.checkpoints is not None:
                    where += f" and saved to {trainer.save()}"
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
