"""The ``flash`` provider's layer: built-in causal self-attention with the Triton kernel as its core.

Where the kernel cannot run (no CUDA device and ``interpret`` false, or no Triton) the
layer says so once and uses torch SDPA.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from apt.providers.flash import FLASH_HEAD_DIMS, dropout_error
from apt.providers.layers.attention import CausalSelfAttention

__all__ = ["FlashCausalSelfAttention"]

_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    """One warning per reason per process: a model has many layers and steps."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"flash attention: {reason}; using torch scaled_dot_product_attention instead "
                      "of the Triton kernel", RuntimeWarning, stacklevel=3)


class FlashCausalSelfAttention(CausalSelfAttention):
    """Causal self-attention whose core is the fused Triton kernel (or SDPA where it cannot run)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, *,
                 interpret: bool = False, **kwargs: Any) -> None:
        if dropout > 0:
            raise dropout_error(dropout)
        super().__init__(d_model, num_heads, dropout, **kwargs)
        if self.head_dim not in FLASH_HEAD_DIMS:
            raise ValueError(f"flash attention: head dim {self.head_dim} (d_model={d_model} / "
                             f"num_heads={num_heads}) is not supported; supported: "
                             f"{', '.join(map(str, FLASH_HEAD_DIMS))}")
        self.interpret = bool(interpret)

    def uses_kernel(self, device: torch.device) -> bool:
        """Whether :meth:`attend` runs the Triton kernel for tensors on ``device`` (else SDPA)."""
        if importlib.util.find_spec("triton") is None:
            _warn_once("triton is not installed (pip install 'apt[triton]')")
            return False
        if device.type == "cuda" or self.interpret:
            return True
        _warn_once(f"no CUDA device (tensors are on {device}) and interpret is false; "
                   "set interpret: true to run the kernel under the Triton interpreter (slow)")
        return False

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, hs) x3 -> (B, nh, T, hs), causal."""
        if not self.uses_kernel(q.device):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        from apt.kernels.flash_attention import flash_attention

        return flash_attention(q, k, v, causal=True, interpret=True if self.interpret else None)
