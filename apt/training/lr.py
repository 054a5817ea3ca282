"""Learning-rate schedule: linear warmup, then cosine, linear, constant or warmup-stable-decay.

``wsd`` (warmup-stable-decay; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
Beyond Fixed Training Durations", and modded-nanogpt's schedule) holds the peak lr after the
warmup and decays linearly to ``min_lr_ratio`` over the last ``cooldown_fraction`` of the
steps (default :data:`WSD_COOLDOWN`). A short run spends most of its steps at the peak, and
the cooldown is where the loss drops.

Written as a tiny stateful object instead of ``torch.optim.lr_scheduler.LambdaLR`` because
plugins may add parameter groups mid-run (MoE upcycling): every group carries its own
``initial_lr`` and follows the same factor, so a new group joins the schedule where it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DECAYS", "WSD_COOLDOWN", "WarmupCosine", "split_decay"]

DECAYS = ("cosine", "linear", "constant", "wsd")
#: The share of the steps ``wsd`` spends decaying when ``cooldown_fraction`` is not given.
WSD_COOLDOWN = 0.2


class WarmupCosine:
    """``lr(step) = initial_lr * factor(step)`` for every param group of ``optimizer``.

    ``step`` is the number of optimizer steps already done (0 for the first step).
    """

    def __init__(self, optimizer: Any, *, warmup_steps: int, total_steps: int,
                 decay: str = "cosine", min_lr_ratio: float = 0.1,
                 cooldown_fraction: float | None = None) -> None:
        if decay not in DECAYS:
            raise ValueError(f"optim.decay={decay!r} is not one of {list(DECAYS)}")
        if cooldown_fraction is not None and decay != "wsd":
            raise ValueError(f"optim.cooldown_fraction applies to optim.decay=wsd only (decay is {decay!r})")
        cooldown = WSD_COOLDOWN if cooldown_fraction is None else float(cooldown_fraction)
        if not 0.0 < cooldown <= 1.0:
            raise ValueError(f"optim.cooldown_fraction must be in (0, 1], got {cooldown_fraction!r}")
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.decay = decay
        self.min_lr_ratio = float(min_lr_ratio)
        self.cooldown_fraction = cooldown if decay == "wsd" else None
        self.last_step = -1
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        if self.decay == "wsd":
            cooldown = max(1, round(self.cooldown_fraction * self.total_steps))
            start = self.total_steps - cooldown
            if step < start:
                return 1.0
            progress = min(1.0, (step - start) / cooldown)
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - progress)
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
                "decay": self.decay, "min_lr_ratio": self.min_lr_ratio,
                "cooldown_fraction": self.cooldown_fraction, "last_step": self.last_step}

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
