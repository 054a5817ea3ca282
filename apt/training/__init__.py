"""The training loop, checkpoints and metrics.

Names are imported lazily so that ``apt.training.schema`` (used while composing configs)
does not import torch.
"""

from __future__ import annotations

from apt.core.lazy import lazy_attributes

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


__getattr__ = lazy_attributes(__name__, _LOCATIONS)
