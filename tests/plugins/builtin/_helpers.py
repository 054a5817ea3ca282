"""Shared bits of the built-in plugin tests: a tiny model and a trainer stand-in."""

from __future__ import annotations

from typing import Any

import torch

from apt.core.config import APTConfig
from apt.modeling import ModelBuilder


def tiny_model(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, num_heads=2, num_layers=2, vocab_size=64, max_seq_len=16)
    cfg.update(overrides)
    return ModelBuilder(APTConfig(**cfg)).build_model()


def batch(seed: int = 0, B: int = 4, T: int = 16, V: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T), generator=g)
    return x, torch.roll(x, -1, dims=1)


class RecordingTrainer:
    """What plugins call on a trainer: log_metric, add_loss, should_stop."""

    def __init__(self, model: torch.nn.Module | None = None, optimizer: Any = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.metrics: dict[str, float] = {}
        self.logged: list[tuple[str, float]] = []
        self.losses: dict[str, torch.Tensor] = {}
        self.should_stop = False
        self.device = torch.device("cpu")
        self.autocast_dtype = None  # full precision, as on CPU

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name] = float(value)
        self.logged.append((name, float(value)))

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        self.losses[name] = value
