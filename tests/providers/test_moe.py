"""The ``moe`` FFN provider: conformance kit, experts and router from providers, option checks."""

from __future__ import annotations

import pytest
from torch import nn

from apt.core import APTConfig, FFNProvider, Registry
from apt.modeling import ModelBuilder
from apt.moe import SwitchRouter
from apt.providers.ffn import SwiGLU
from apt.providers.moe import MoELayer, MoEProvider
from apt.testing import check_ffn_provider


@pytest.mark.parametrize(
    "options",
    [
        {"num_experts": 4, "top_k": 2},
        {"num_experts": 4, "top_k": 2, "shared_expert": True, "expert": "swiglu"},
        {"num_experts": 3, "top_k": 1, "router": "switch"},
    ],
)
def test_dropless_moe_passes_the_kit_as_a_position_wise_ffn(options):
    check_ffn_provider(MoEProvider(options))


def test_moe_with_a_capacity_limit_passes_the_kit_when_not_pointwise():
    check_ffn_provider(MoEProvider({"num_experts": 4, "top_k": 2, "capacity_factor": 0.5}), pointwise=False)


def test_provider_builds_stacked_experts_router_and_options():
    layer = MoEProvider({"num_experts": 3, "top_k": 1, "expert": "swiglu", "expert_d_ff": 20, "shared_expert": True,
                         "balance_coef": 0.1, "router_config": {"temperature": 2.0}}).create_layer(
        16, 64, 0.1, router_name="switch")
    assert isinstance(layer, MoELayer) and layer.num_experts == 3 and layer.capacity_factor is None
    assert all(isinstance(e, SwiGLU) and e.c_proj.in_features == 20 for e in layer.experts)
    assert all(isinstance(e.dropout, nn.Identity) for e in layer.experts)
    assert isinstance(layer.dropout, nn.Dropout) and layer.dropout.p == 0.1  # on the combined output
    assert layer.shared_expert.c_proj.in_features == 20
    assert isinstance(layer.router, SwitchRouter)
    assert (layer.router.balance_coef, layer.router.z_coef, layer.router.temperature) == (0.1, 0.001, 2.0)


class TanhFFNProvider(FFNProvider):
    """A user's FFN provider (its layers are not a built-in MLP)."""

    def get_name(self) -> str:
        return "tanh_ffn"

    def create_layer(self, d_model, d_ff, dropout=0.0, **kwargs):
        return nn.Sequential(nn.Linear(d_model, d_ff), nn.Tanh(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))


def test_experts_of_another_provider_are_built_without_dropout():
    reg = Registry.with_builtins()
    reg.register("ffn", "tanh_ffn", TanhFFNProvider)
    cfg = APTConfig(d_model=16, num_heads=2, dropout=0.2, ffn_name="moe",
                    ffn_config={"expert": "tanh_ffn", "num_experts": 2, "top_k": 1})
    layer = ModelBuilder(cfg, registry=reg).build_ffn()
    assert len(layer.experts) == 2 and all(e[3].p == 0.0 for e in layer.experts)  # the layer drops out its output, in token order
    assert layer.dropout.p == 0.2
    check_ffn_provider(reg.get("ffn", "moe", cfg.ffn_config), layer_kwargs={"registry": reg})
    with pytest.raises(Exception, match="unknown ffn provider 'tanh_ffn'"):
        ModelBuilder(cfg)  # the default registry does not know it


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_experts": 0}, "num_experts must be a positive integer"),
        ({"num_experts": 2, "top_k": 3}, "top_k=3 must be an integer in \\[1, num_experts=2\\]"),
        ({"capacity_factor": -1}, "capacity_factor must be a number > 0 or null"),
        ({"capacity_factor": True}, "capacity_factor must be a number > 0 or null"),
        ({"expert": "moe"}, "expert cannot be 'moe'"),
        ({"expert": "mlp", "expert_config": {"activation": "nope"}}, "unknown activation 'nope'"),
        ({"router": "switch"}, "switch router is top-1"),
        ({"router_config": {"temperature": 0}}, "temperature must be > 0"),
        ({"experts": 4}, "unknown option.*'experts'.*'num_experts'"),
    ],
)
def test_provider_validate_config_fails_early(options, match):
    with pytest.raises(ValueError, match=match):
        MoEProvider(options).validate_config({"d_model": 16, "d_ff": 64})
