"""Learning-rate schedule: linear warmup, then cosine (or linear / constant) decay.

Written as a tiny stateful object instead of ``torch.optim.lr_scheduler.LambdaLR`` because
plugins may add parameter groups mid-run (MoE upcycling): every group carries its own
``initial_lr`` and follows the same factor, so a new group joins the schedule where it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DECAYS", "WarmupCosine", "split_decay"]

DECAYS = ("cosine", "linear", "constant")


class WarmupCosine:
    """``lr(step) = initial_lr * factor(step)`` for every param group of ``optimizer``.

    ``step`` is the number of optimizer steps already done (0 for the first step).
    """

    def __init__(self, optimizer: Any, *, warmup_steps: int, total_steps: int,
                 decay: str = "cosine", min_lr_ratio: float = 0.1) -> None:
        if decay not in DECAYS:
            raise ValueError(f"optim.decay={decay!r} is not one of {list(DECAYS)}")
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.decay = decay
        self.min_lr_ratio = float(min_lr_ratio)
        self.last_step = -1
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.decay == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def apply(self, step: int) -> float:
        """Set every group's lr for the step about to run; returns the base group's lr."""
        f = self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * f
        self.last_step = step
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "decay": self.decay, "min_lr_ratio": self.min_lr_ratio, "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # The shape comes from the current config (a resumed run may extend max_steps);
        # only the position is restored.
        self.last_step = int(state.get("last_step", -1))


def split_decay(params: Iterable[Any], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices (decayed) and vectors/scalars (norms, biases: not decayed)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
