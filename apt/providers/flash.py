"""The ``flash`` attention provider: APT's own Triton FlashAttention kernel.

The layer is the built-in causal self-attention (same ``c_attn``/``c_proj`` weights, rotary
positions, residual dropout) with its attention core replaced by
:func:`apt.kernels.flash_attention.flash_attention`, so checkpoints move freely between
``sdpa``, ``naive`` and ``flash``.

Where the kernel cannot run, the provider says so once and uses torch SDPA:
no CUDA device (unless ``interpret: true``, which runs the kernel under the Triton
interpreter: slow, for tests and debugging), or Triton not installed. Attention dropout is
not implemented in the kernel and is refused rather than silently dropped.

On a GPU, train in bf16/fp16 (autocast): float32 inputs get true fp32 products on the FMA
units, which are exact but slow, and their kernels take minutes to compile the first time.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from apt.providers.attention import BuiltinAttentionProvider, CausalSelfAttention

__all__ = ["FLASH_HEAD_DIMS", "FlashAttentionProvider", "FlashCausalSelfAttention"]

#: Head dims the kernel compiles for (kept here so validating a config does not import triton).
FLASH_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)

_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    """One warning per reason per process: a model has many layers and steps."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"flash attention: {reason}; using torch scaled_dot_product_attention instead "
                      "of the Triton kernel", RuntimeWarning, stacklevel=3)


def _dropout_error(dropout: float) -> ValueError:
    return ValueError(f"flash attention: dropout={dropout} is not supported (the kernel has no attention "
                      "dropout); set dropout: 0.0 or use provider/attention=sdpa")


class FlashCausalSelfAttention(CausalSelfAttention):
    """Causal self-attention whose core is the fused Triton kernel (or SDPA where it cannot run)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, *,
                 interpret: bool = False, **kwargs: Any) -> None:
        if dropout > 0:
            raise _dropout_error(dropout)
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


class FlashAttentionProvider(BuiltinAttentionProvider):
    """Causal attention via APT's Triton FlashAttention-2 kernel (``interpret`` for CPU debugging)."""

    name = "flash"
    layer_cls = FlashCausalSelfAttention
    options = {"interpret": False}

    def validate_config(self, config: Mapping[str, Any]) -> bool:
        super().validate_config(config)
        opts = self.resolved_options()
        if not isinstance(opts["interpret"], bool):
            raise ValueError(f"flash attention: interpret must be true or false, got {opts['interpret']!r}")
        head_dim = config["d_model"] // config["num_heads"]
        if head_dim not in FLASH_HEAD_DIMS:
            raise ValueError(f"flash attention: head dim {head_dim} (d_model={config['d_model']} / "
                             f"num_heads={config['num_heads']}) is not supported; supported: "
                             f"{', '.join(map(str, FLASH_HEAD_DIMS))}")
        dropout = config.get("dropout", 0.0) or 0.0
        if dropout > 0:
            raise _dropout_error(dropout)
        return True

    def layer_kwargs(self) -> dict[str, Any]:
        return self.resolved_options()
