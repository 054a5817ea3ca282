"""The model side of APT: ModelBuilder and the transformer LM built from providers.

    from apt.modeling import ModelBuilder
    model = ModelBuilder(APTConfig(d_model=128, attention_name="sdpa")).build_model()

Names are imported on first use, so :mod:`apt.modeling.selection` (which checks a
provider selection while a config is checked) does not import torch.
"""

from __future__ import annotations

from apt.core.lazy import lazy_attributes

__all__ = [
    "Block",
    "LayerNorm",
    "ModelBuilder",
    "ProviderSelection",
    "RMSNorm",
    "Rotary",
    "TransformerLM",
    "apply_rotary",
    "make_norm",
    "select_providers",
]

_LOCATIONS = {
    "Block": "apt.modeling.transformer",
    "LayerNorm": "apt.modeling.layers",
    "ModelBuilder": "apt.modeling.builder",
    "ProviderSelection": "apt.modeling.selection",
    "RMSNorm": "apt.modeling.layers",
    "Rotary": "apt.modeling.layers",
    "TransformerLM": "apt.modeling.transformer",
    "apply_rotary": "apt.modeling.layers",
    "make_norm": "apt.modeling.layers",
    "select_providers": "apt.modeling.selection",
}


__getattr__ = lazy_attributes(__name__, _LOCATIONS)
