"""``trainer.on_nonfinite``: what a non-finite loss does to the run.

``stop`` (the default) ends the run at the first non-finite loss, with a non-zero exit and
one error line naming that step and the newest checkpoint written before it; no checkpoint
is written after it, so resuming never starts from poisoned weights. The check costs no
host sync of its own: the first bad step is recorded on the device and read where the loop
syncs anyway (a metrics row, an evaluation, a checkpoint, the end), so the run stops at
most ``log_every`` steps after it (those steps' rows show the NaN).

``skip`` drops a step whose loss is not finite (no optimizer step, a warning, counted in
the ``nonfinite/skipped`` column), at the cost of one host sync per step. ``ignore`` trains
on (the weights usually become NaN). A step a plugin skipped (``trainer.skip_step``, as
``nan_guard`` does) did not touch the weights, so the policy leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # POLICIES is read by the config check, which must not import torch
    import torch

__all__ = ["POLICIES", "NonFiniteCheck", "NonFiniteLoss"]

#: The values of ``trainer.on_nonfinite``.
POLICIES = ("stop", "skip", "ignore")


class NonFiniteLoss(RuntimeError):
    """The loss of ``step`` was not finite under ``trainer.on_nonfinite=stop``."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step, self.checkpoint = step, checkpoint
        where = (f"the last checkpoint before it is {checkpoint}" if checkpoint is not None
                 else "no checkpoint was written before it")
        super().__init__(f"non-finite loss at step {step}; the run stopped and {where} (lower the learning "
                         "rate, check the data, or set trainer.on_nonfinite=skip or plugin=[nan_guard])")


class NonFiniteCheck:
    """Watches each step's total loss under one of :data:`POLICIES`."""

    def __init__(self, policy: str, device: torch.device) -> None:
        import torch

        if policy not in POLICIES:
            raise ValueError(f"trainer.on_nonfinite={policy!r} is not one of {list(POLICIES)}")
        self.policy = policy
        self.skipped = 0  # steps dropped under "skip" (checkpoint state)
        self._finite: torch.Tensor | None = None  # this step's micro-batches all finite (device)
        self._first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet

    def observe(self, total: torch.Tensor) -> None:
        """A micro-batch's loss, as handed to backward."""
        if self.policy != "ignore":
            import torch

            ok = torch.isfinite(total.detach()).all()
            self._finite = ok if self._finite is None else self._finite & ok

    def should_skip(self, dist: Any) -> bool:
        """Under ``skip``: whether this step's update must be dropped (one host sync).

        Under torchrun every rank drops it when one rank's loss was not finite (the
        gradients are averaged, so a NaN on one rank reaches all).
        """
        if self.policy != "skip":
            return False
        bad = self._finite is not None and not bool(self._finite)
        if not dist.any_true(bad, self._first_bad.device):
            return False
        self.skipped += 1
        return True

    def end_step(self, step: int, applied: bool) -> None:
        """Close the step; only an update that was applied can have made the weights bad."""
        if self.policy == "stop" and applied and self._finite is not None:
            self._first_bad.masked_fill_(~self._finite & (self._first_bad == 0), step)
        self._finite = None

    def check(self, dist: Any, last_checkpoint: Path | None) -> None:
        """Under ``stop``: raise :class:`NonFiniteLoss` if a step's loss was not finite (syncs;
        under torchrun collective, so every rank stops at the same place)."""
        if self.policy == "stop":
            none = 2**62  # the earliest bad step over ranks: a max of negated steps
            bad = -dist.max_int(-(int(self._first_bad) or none), self._first_bad.device)
            if bad != none:
                raise NonFiniteLoss(bad, last_checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
