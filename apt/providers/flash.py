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

from collections.abc import Mapping
from typing import Any

from apt.core.lazy import lazy_attributes
from apt.providers.attention import BuiltinAttentionProvider

# FlashCausalSelfAttention is reachable here too, lazily (__getattr__).
__all__ = ["FLASH_HEAD_DIMS", "FlashAttentionProvider", "dropout_error"]

#: Head dims the kernel compiles for (kept here so validating a config does not import triton).
FLASH_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)


__getattr__ = lazy_attributes(__name__, {"FlashCausalSelfAttention": "apt.providers.layers.flash"})


def dropout_error(dropout: float) -> ValueError:
    return ValueError(f"flash attention: dropout={dropout} is not supported (the kernel has no attention "
                      "dropout); set dropout: 0.0 or use provider/attention=sdpa")


class FlashAttentionProvider(BuiltinAttentionProvider):
    """Causal attention via APT's Triton FlashAttention-2 kernel (``interpret`` for CPU debugging)."""

    name = "flash"
    layer = "apt.providers.layers.flash:FlashCausalSelfAttention"
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
            raise dropout_error(dropout)
        return True

    def layer_kwargs(self) -> dict[str, Any]:
        return self.resolved_options()
