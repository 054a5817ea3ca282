"""The metrics window: what accumulates between two metrics.csv rows.

Each optimizer step adds its losses (means over micro-batches, still on the device: no
host sync per step) and plugins add values with ``trainer.log_metric``; the next row takes
the means over the window's steps and the newest logged values, then the window starts
over. The window is checkpoint state: a run interrupted between two rows and resumed
writes the row the uninterrupted run writes, averaged over the same steps (its throughput
too: the window's seconds and tokens before the interruption carry over).

What is logged: ``train_loss`` is the cross-entropy alone (comparable to ``val_loss``);
``loss/total`` is what was optimised and ``loss/<name>`` each added term (a layer's aux
loss such as an MoE router's ``loss/balance`` and ``loss/z``, a plugin's ``add_loss`` such
as ``loss/align``). Each is the mean over the row's steps, a term counting 0 in steps that
did not add it, so ``loss/total = train_loss + sum(loss/<name>)`` row by row. Aux losses
are whatever layers add through :mod:`apt.modeling.auxiliary` during the forward, so a
layer swapped in mid-run (MoE upcycling) is counted from its first forward. Skipped steps
(``trainer.skip_step``, ``trainer.on_nonfinite=skip``) are left out of the means.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["MetricsWindow"]


class MetricsWindow:
    """Loss sums over the steps since the last row, the newest lr, and values logged since."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}  # column -> summed per-step value, on the device
        self.steps = 0
        self.lr = 0.0
        self.logged: dict[str, Any] = {}  # log_metric values waiting for the next row
        self.started = time.perf_counter()  # throughput only: the window's clock and its tokens
        self.tokens_at_start = 0
        self._carried = (0.0, 0)  # seconds and tokens of this window before a resume

    def add_step(self, means: Mapping[str, torch.Tensor], lr: float) -> None:
        """One optimizer step's losses (column -> 0-d tensor) and the lr it ran with."""
        for column, value in means.items():
            self.sums[column] = self.sums[column] + value if column in self.sums else value
        self.steps += 1
        self.lr = lr

    def log(self, name: str, value: Any) -> None:
        self.logged[name] = value

    def row(self, *, step: int, epoch: int, val: Mapping[str, Any], tokens_seen: int, dist: Any,
            layer_stats: Mapping[str, Any]) -> dict[str, Any]:
        """Close the window into a metrics.csv row (``val``: the step's evaluation columns, if
        any; ``layer_stats``: the model's per-layer statistics) and start the next window."""
        losses = self.take_losses(dist)
        row = {"step": step, "epoch": epoch, "train_loss": losses.pop("train_loss", None), **val, "lr": self.lr,
               "tokens_per_s": self.tokens_per_s(tokens_seen, time.perf_counter()), **losses}
        self.logged.update(layer_stats)
        row.update(self.take_logged())
        self.restart(tokens_seen)
        return row

    def take_losses(self, dist: Any) -> dict[str, float]:
        """The window's mean of every loss column over its steps and over ranks (one transfer)."""
        if not self.steps:
            return {}
        columns = sorted(self.sums)  # the same order on every rank
        stacked = dist.all_reduce_mean(torch.stack([self.sums[c] for c in columns]))
        return {c: v / self.steps for c, v in zip(columns, stacked.tolist(), strict=True)}

    def take_logged(self) -> dict[str, Any]:
        """The logged values as plain numbers; the window forgets them."""
        values = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in self.logged.items()}
        self.logged = {}
        return values

    def restart(self, tokens_seen: int) -> None:
        self.sums, self.steps = {}, 0
        self.started, self.tokens_at_start = time.perf_counter(), tokens_seen

    def tokens_per_s(self, tokens_seen: int, now: float) -> float:
        return (tokens_seen - self.tokens_at_start) / max(now - self.started, 1e-9)

    def start_clock(self, tokens_seen: int) -> None:
        """Training (re)starts now: the window's clock runs from here, plus the seconds and
        tokens it had before a resume, so a row's throughput is over its own steps."""
        seconds, tokens = self._carried
        self.started, self.tokens_at_start = time.perf_counter() - seconds, tokens_seen - tokens
        self._carried = (0.0, 0)

    def state_dict(self, dist: Any, tokens_seen: int) -> dict[str, Any]:
        """Sums averaged over ranks (collective under torchrun: every rank calls it)."""
        columns = sorted(self.sums)
        sums = dist.all_reduce_mean(torch.stack([self.sums[c] for c in columns])).cpu() if columns else None
        return {"sums": {c: sums[i] for i, c in enumerate(columns)}, "steps": self.steps, "lr": self.lr,
                "logged": {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in self.logged.items()},
                "seconds": time.perf_counter() - self.started, "tokens": tokens_seen - self.tokens_at_start}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device, tokens_seen: int) -> None:
        self.sums = {c: v.to(device) for c, v in state.get("sums", {}).items()}
        self.steps, self.lr = int(state.get("steps", 0)), float(state.get("lr", 0.0))
        self.logged = dict(state.get("logged", {}))
        self._carried = (float(state.get("seconds", 0.0)), int(state.get("tokens", 0)))  # see start_clock
        self.started, self.tokens_at_start = time.perf_counter(), tokens_seen
