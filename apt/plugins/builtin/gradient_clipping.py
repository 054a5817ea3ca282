"""Built-in ``gradient_clipping`` plugin: clip the global gradient norm after backward.

The guide's Example 3. torch is imported inside the hook so that loading or validating
the plugin does not import it. The norm before clipping is reported to the trainer as
the ``grad_norm`` metric when a trainer is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from apt.plugins.base import CLIPS_GRADIENTS, Plugin
from apt.plugins.trainer_view import TrainerView

__all__ = ["GradientClippingOptions", "GradientClippingPlugin"]

log = logging.getLogger(__name__)


@dataclass
class GradientClippingOptions:
    max_norm: float = 1.0  # largest global gradient norm kept
    norm_type: float | Literal["inf"] = 2.0  # p of the p-norm; inf: the largest absolute value


class GradientClippingPlugin(Plugin):
    """Clip gradients during training (options: :class:`GradientClippingOptions`)."""

    Options = GradientClippingOptions
    capabilities = frozenset({CLIPS_GRADIENTS})  # the trainer leaves trainer.grad_clip to it

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_norm = self.options.max_norm
        self.norm_type = self.options.norm_type
        self.last_norm: float | None = None
        self.num_clipped = 0

    def get_name(self) -> str:
        return "gradient_clipping"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        """Ranges; types were checked against :class:`GradientClippingOptions` at creation."""
        if not self.max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, got {self.max_norm!r}")
        if not float(self.norm_type) > 0:
            raise ValueError(f"norm_type must be a positive number or 'inf', got {self.norm_type!r}")
        return True

    def on_backward_end(self, model: Any = None, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        if model is None:
            return
        import torch.nn as nn

        total_norm = float(nn.utils.clip_grad_norm_(model.parameters(), self.max_norm,
                                                    norm_type=float(self.norm_type)))
        self.last_norm = total_norm
        if total_norm > self.max_norm:
            self.num_clipped += 1
            log.debug("Gradient clipped: %.2f -> %s", total_norm, self.max_norm)
        if trainer is not None:
            trainer.log_metric("grad_norm", total_norm)

    def state_dict(self) -> dict[str, Any]:
        return {"num_clipped": self.num_clipped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num_clipped = int(state["num_clipped"])
