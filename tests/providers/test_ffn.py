"""Built-in FFN providers: conformance kit, formulas and option validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from apt.providers.ffn import MLPProvider, SwiGLUProvider
from apt.testing import check_ffn_provider


@pytest.mark.parametrize("name", ["mlp", "swiglu"])
def test_builtin_ffn_passes_the_kit(name):
    check_ffn_provider(name)


@pytest.mark.parametrize("activation", ["gelu_tanh", "relu", "silu"])
def test_mlp_activations_pass_the_kit(activation):
    check_ffn_provider(MLPProvider({"activation": activation}), dtypes=(torch.float32,))


def test_mlp_and_swiglu_compute_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16)
    mlp = MLPProvider({}).create_layer(16, 40, bias=True)
    expected = F.linear(F.gelu(F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)), mlp.c_proj.weight, mlp.c_proj.bias)
    torch.testing.assert_close(mlp(x), expected)
    glu = SwiGLUProvider({}).create_layer(16, 40)
    w_gate, w_up = glu.c_fc.weight[:40], glu.c_fc.weight[40:]
    expected = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ glu.c_proj.weight.T
    torch.testing.assert_close(glu(x), expected)
    assert glu.c_fc.bias is None


def test_unknown_activation_and_options_are_rejected():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*'gelu'"):
        MLPProvider({"activation": "swish"}).validate_config({"d_model": 8, "d_ff": 32})
    with pytest.raises(ValueError, match="unknown option.*'act'.*valid options: \\['activation'\\]"):
        MLPProvider({"act": "relu"}).validate_config({"d_model": 8})
    with pytest.raises(ValueError, match="d_ff must be a positive integer"):
        SwiGLUProvider({}).validate_config({"d_model": 8, "d_ff": -1})
