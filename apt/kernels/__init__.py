"""Fused kernels (Triton), each with its launcher, autograd wrapper and torch reference."""

from apt.kernels.flash_attention import (
    FlashAttentionFunction,
    attention_ref,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)

__all__ = [
    "FlashAttentionFunction",
    "attention_ref",
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_forward",
]
