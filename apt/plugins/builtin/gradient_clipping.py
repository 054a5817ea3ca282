"""Built-in ``gradient_clipping`` plugin: clip the global gradient norm after backward.

The guide's Example 3. torch is imported inside the hook so that loading or validating
the plugin does not import it. The norm before clipping is reported to the trainer as
the ``grad_norm`` metric when a trainer is passed in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from apt.plugins.base import Plugin

__all__ = ["GradientClippingPlugin"]

log = logging.getLogger(__name__)


class GradientClippingPlugin(Plugin):
    """Clip gradients during training.

    Config: ``max_norm`` (default 1.0), ``norm_type`` (default 2.0; ``inf`` for max-abs).
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_norm = self.config.get("max_norm", 1.0)
        self.norm_type = self.config.get("norm_type", 2.0)
        self.last_norm: float | None = None
        self.num_clipped = 0

    def get_name(self) -> str:
        return "gradient_clipping"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if not isinstance(self.max_norm, int | float) or not self.max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, got {self.max_norm!r}")
        norm = float(self.norm_type) if isinstance(self.norm_type, int | float | str) else math.nan
        if not (norm > 0):
            raise ValueError(f"norm_type must be a positive number or 'inf', got {self.norm_type!r}")
        return True

    def on_backward_end(self, model: Any = None, trainer: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        import torch.nn as nn

        total_norm = float(nn.utils.clip_grad_norm_(model.parameters(), self.max_norm,
                                                    norm_type=float(self.norm_type)))
        self.last_norm = total_norm
        if total_norm > self.max_norm:
            self.num_clipped += 1
            log.debug("Gradient clipped: %.2f -> %s", total_norm, self.max_norm)
        if trainer is not None and hasattr(trainer, "log_metric"):
            trainer.log_metric("grad_norm", total_norm)

    def state_dict(self) -> dict[str, Any]:
        return {"num_clipped": self.num_clipped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num_clipped = int(state["num_clipped"])
