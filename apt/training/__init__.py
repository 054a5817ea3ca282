"""The training loop, checkpoints and metrics.

Names are imported lazily so that ``apt.training.schema`` (used while composing configs)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "MetricsLogger",
    "Trainer",
    "WarmupCosine",
]

_LOCATIONS = {
    "CheckpointError": "apt.training.checkpoint",
    "CheckpointManager": "apt.training.checkpoint",
    "MetricsLogger": "apt.training.metrics",
    "Trainer": "apt.training.trainer",
    "WarmupCosine": "apt.training.lr",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'apt.training' has no attribute {name!r}")
