"""Built-in attention providers: conformance kit, reference agreement, autopoietic specifics."""

from __future__ import annotations

import pytest
import torch

from apt.providers.attention import (
    AutopoieticAttention,
    AutopoieticAttentionProvider,
    NaiveAttentionProvider,
    SDPAAttentionProvider,
)
from apt.testing import check_attention_provider


@pytest.mark.parametrize("name", ["sdpa", "naive", "autopoietic"])
def test_builtin_attention_passes_the_kit(name):
    check_attention_provider(name, reference="naive" if name == "sdpa" else None)


def test_autopoietic_with_other_options_passes_the_kit():
    check_attention_provider(AutopoieticAttentionProvider({"alpha": 0.5, "sr_ratio": 2}), d_model=48, num_heads=3)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_naive_and_sdpa_agree_in_float32_with_gradients(position):
    kw = {"position": position, "max_seq_len": 64}
    torch.manual_seed(0)
    sdpa = SDPAAttentionProvider({}).create_layer(64, 4, **kw)
    naive = NaiveAttentionProvider({}).create_layer(64, 4, **kw)
    naive.load_state_dict(sdpa.state_dict())
    x = torch.randn(3, 50, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = sdpa(x), naive(x2)
    torch.testing.assert_close(y, y2, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, atol=2e-6, rtol=1e-5)
    for (name, p), p2 in zip(sdpa.named_parameters(), naive.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p2.grad, atol=5e-6, rtol=1e-5, msg=name)


def test_autopoietic_at_alpha_zero_equals_sdpa():
    torch.manual_seed(0)
    auto = AutopoieticAttentionProvider({"alpha": 0.0}).create_layer(48, 4)
    sdpa = SDPAAttentionProvider({}).create_layer(48, 4)
    sdpa.load_state_dict(auto.state_dict(), strict=False)
    x = torch.randn(2, 12, 48)
    torch.testing.assert_close(auto(x), sdpa(x), atol=0, rtol=0)


def test_autopoietic_perturbation_follows_its_formula():
    torch.manual_seed(0)
    layer: AutopoieticAttention = AutopoieticAttentionProvider({"alpha": 0.3, "init_tau": 0.7}).create_layer(24, 2)
    assert layer.rank == 4 and layer.tau.item() == pytest.approx(0.7)  # max(4, 24 // 6)
    with torch.no_grad():
        layer.gate_weight.normal_()
        layer.gate_bias.normal_()
    x = torch.randn(2, 5, 24)
    q, k, v = layer.qkv(x)
    y = layer.attend(q, k, v)
    q_mean = torch.stack([q[:, :, : t + 1].mean(2) for t in range(5)], dim=2)  # running mean
    g = torch.sigmoid((q_mean * layer.gate_weight[None, :, None]).sum(-1) + layer.gate_bias[None, :, None])
    p = layer.v_r(layer.u_r(x)).view(2, 5, 2, 12).transpose(1, 2)
    expected = layer.merge(y + 0.3 * torch.tanh(torch.tensor(0.7)) * g.unsqueeze(-1) * p)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)
    assert AutopoieticAttentionProvider({}).create_layer(120, 4).rank == 20


@pytest.mark.parametrize(
    ("provider", "config", "match"),
    [
        (SDPAAttentionProvider({}), {"d_model": 30, "num_heads": 4}, "d_model=30 is not divisible by num_heads=4"),
        (NaiveAttentionProvider({}), {"d_model": 0, "num_heads": 4}, "d_model must be a positive integer"),
        (SDPAAttentionProvider({}), {"d_model": 12, "num_heads": 4, "position": "rope"}, "even head dim"),
        (SDPAAttentionProvider({"alpha": 1}), {"d_model": 32, "num_heads": 4}, "unknown option.*'alpha'"),
        (AutopoieticAttentionProvider({"sr_ratio": 0}), {"d_model": 32, "num_heads": 4}, "sr_ratio must be a positive"),
        (AutopoieticAttentionProvider({"alpha": "x"}), {"d_model": 32, "num_heads": 4}, "alpha must be a number"),
    ],
)
def test_validate_config_explains_what_is_wrong(provider, config, match):
    with pytest.raises(ValueError, match=match):
        provider.validate_config(config)


def test_providers_describe_themselves():
    for cls, name in [(SDPAAttentionProvider, "sdpa"), (NaiveAttentionProvider, "naive"),
                      (AutopoieticAttentionProvider, "autopoietic")]:
        p = cls({})
        assert p.get_name() == name and p.supports_rope and p.validate_config({"d_model": 32, "num_heads": 4})
        assert p.get_description()
