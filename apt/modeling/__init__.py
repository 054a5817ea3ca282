"""The model side of APT: ModelBuilder and the transformer LM built from providers.

    from apt.modeling import ModelBuilder
    model = ModelBuilder(APTConfig(d_model=128, attention_name="sdpa")).build_model()
"""

from apt.modeling.builder import ModelBuilder
from apt.modeling.layers import LayerNorm, RMSNorm, Rotary, apply_rotary, make_norm
from apt.modeling.transformer import Block, TransformerLM

__all__ = [
    "Block",
    "LayerNorm",
    "ModelBuilder",
    "RMSNorm",
    "Rotary",
    "TransformerLM",
    "apply_rotary",
    "make_norm",
]
