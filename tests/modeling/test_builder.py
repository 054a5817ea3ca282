"""ModelBuilder: the guide's flow, name resolution, validation and keyword passing."""

from __future__ import annotations

import pytest

from apt.core import APTConfig, Provider, Registry, RegistryError
from apt.core.registry import registry as global_registry
from apt.modeling import ModelBuilder, TransformerLM
from apt.moe import MoELayer, SwitchRouter, TopKRouter
from apt.plugins import Plugin, PluginManager
from apt.providers.attention import CausalSelfAttention, NaiveCausalSelfAttention
from apt.providers.ffn import MLP, SwiGLU
from tests.helpers import MyAttentionLayer, MyAttentionProvider


class MyPlugin(Plugin):
    def get_name(self) -> str:
        return "my_plugin"

    def setup(self, registry, hook_manager):
        super().setup(registry, hook_manager)
        registry.register("attention", "my_attention", MyAttentionProvider, default=False, excludes=["flash_attn"])


def test_guide_plugin_registers_attention_and_builder_uses_it():
    reg = Registry.with_builtins()
    pm = PluginManager(registry=reg)
    pm.register_plugin("my_plugin", MyPlugin)
    pm.load_plugin("my_plugin", {"enabled": True})
    pm.setup_all()
    builder = ModelBuilder(APTConfig(d_model=768, attention_name="my_attention"), registry=reg)
    attention = builder.build_attention()
    assert isinstance(attention, MyAttentionLayer)
    assert attention.attn.embed_dim == 768
    model = builder.build_model()
    assert all(isinstance(b.attn, MyAttentionLayer) for b in model.blocks)


def test_guide_snippet_with_the_default_registry():
    global_registry.register("attention", "my_attention", MyAttentionProvider)
    try:
        attention = ModelBuilder(APTConfig(d_model=768, attention_name="my_attention")).build_attention()
        assert isinstance(attention, MyAttentionLayer)
    finally:
        global_registry.unregister("attention", "my_attention")


def test_unknown_provider_name_lists_available_ones():
    with pytest.raises(RegistryError) as exc:
        ModelBuilder(APTConfig(attention_name="sdpaa"))
    message = str(exc.value)
    assert "sdpaa" in message and "'sdpa'" in message and "'naive'" in message and "autopoietic" in message
    with pytest.raises(RegistryError, match="unknown ffn provider 'gelu_mlp'.*'mlp'"):
        ModelBuilder(APTConfig(ffn_name="gelu_mlp"))


def test_defaults_build_sdpa_and_mlp():
    builder = ModelBuilder(APTConfig(d_model=64, num_heads=4))
    assert builder.attention_name == "sdpa" and builder.ffn_name == "mlp"
    assert type(builder.build_attention()) is CausalSelfAttention
    assert isinstance(builder.build_ffn(), MLP)
    assert not builder.uses_router


def test_named_builtins_are_selected():
    b = ModelBuilder(APTConfig(d_model=64, num_heads=4, attention_name="naive", ffn_name="swiglu"))
    assert isinstance(b.build_attention(), NaiveCausalSelfAttention)
    assert isinstance(b.build_ffn(), SwiGLU)


def test_invalid_model_config_fails_early():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        ModelBuilder(APTConfig(d_model=30, num_heads=4))
    with pytest.raises(ValueError, match="norm='batchnorm'"):
        ModelBuilder(APTConfig(norm="batchnorm"))


def test_provider_validate_config_sees_dims_and_options():
    seen = {}

    class Picky(MyAttentionProvider):
        def validate_config(self, config):
            seen.update(config)
            return config["window"] < config["max_seq_len"]

    reg = Registry.with_builtins()
    reg.register("attention", "picky", Picky)
    ModelBuilder(APTConfig(attention_name="picky", attention_config={"window": 8}, max_seq_len=64), registry=reg)
    assert seen["window"] == 8 and seen["d_model"] == 128 and seen["num_heads"] == 4 and seen["position"] == "learned"
    with pytest.raises(ValueError, match="attention provider 'picky' rejected its config"):
        ModelBuilder(APTConfig(attention_name="picky", attention_config={"window": 99}, max_seq_len=64), registry=reg)


def test_provider_errors_are_wrapped_with_the_provider_name():
    with pytest.raises(ValueError, match="attention provider 'autopoietic'.*unknown option.*'sr_ratio'"):
        ModelBuilder(APTConfig(attention_name="autopoietic", attention_config={"sr": 4}))
    with pytest.raises(ValueError, match="ffn provider 'mlp'.*unknown activation 'tanhh'.*'gelu'"):
        ModelBuilder(APTConfig(ffn_config={"activation": "tanhh"}))
    with pytest.raises(ValueError, match="top_k=5 must be an integer in \\[1, num_experts=4\\]"):
        ModelBuilder(APTConfig(ffn_name="moe", ffn_config={"num_experts": 4, "top_k": 5}))


def test_rope_needs_a_provider_that_applies_it():
    reg = Registry.with_builtins()
    reg.register("attention", "my_attention", MyAttentionProvider)
    with pytest.raises(ValueError, match="'my_attention' does not apply rotary positions.*'sdpa'"):
        ModelBuilder(APTConfig(attention_name="my_attention", position="rope"), registry=reg)
    # learned positions are fine for it, and every built-in applies rope itself
    ModelBuilder(APTConfig(attention_name="my_attention"), registry=reg)
    layer = ModelBuilder(APTConfig(d_model=64, num_heads=4, position="rope"), registry=reg).build_attention()
    assert layer.rotary is not None


def test_excluded_combination_is_refused():
    reg = Registry.with_builtins()
    reg.register("attention", "my_attention", MyAttentionProvider, excludes=["ffn:swiglu"])
    ModelBuilder(APTConfig(attention_name="my_attention"), registry=reg)
    with pytest.raises(RegistryError, match="excludes ffn provider 'swiglu'"):
        ModelBuilder(APTConfig(attention_name="my_attention", ffn_name="swiglu"), registry=reg)


def test_a_provider_that_cannot_take_the_builders_keywords_is_refused_naming_it():
    class Strict(Provider):  # no **kwargs: position, layer_idx, ... would be dropped silently
        def create_layer(self, d_model, num_heads, dropout=0.0, bias=True):
            return MyAttentionLayer(d_model, num_heads, dropout)

    reg = Registry.with_builtins()
    reg.register("attention", "strict", Strict)
    with pytest.raises(ValueError, match=r"attention provider 'strict': .*create_layer.*'position'.*\*\*kwargs"):
        ModelBuilder(APTConfig(attention_name="strict"), registry=reg)


def test_keywords_reach_providers():
    calls = {}

    class Greedy(Provider):
        def create_layer(self, d_model, num_heads, dropout=0.0, **kwargs):
            calls["kwargs"] = kwargs
            return MyAttentionLayer(d_model, num_heads, dropout)

    reg = Registry.with_builtins()
    reg.register("attention", "greedy", Greedy)
    ModelBuilder(APTConfig(attention_name="greedy", num_layers=3), registry=reg).build_attention(layer_idx=2)
    assert calls["kwargs"]["layer_idx"] == 2 and calls["kwargs"]["num_layers"] == 3
    assert calls["kwargs"]["position"] == "learned" and calls["kwargs"]["max_seq_len"] == 256


def test_moe_uses_router_from_config_and_builder_builds_routers():
    cfg = APTConfig(d_model=32, num_heads=4, num_layers=2, ffn_name="moe", router_name="switch",
                    ffn_config={"num_experts": 3, "top_k": 1})
    builder = ModelBuilder(cfg)
    assert builder.uses_router and builder.router_name == "switch"
    ffn = builder.build_ffn()
    assert isinstance(ffn, MoELayer) and isinstance(ffn.router, SwitchRouter) and ffn.num_experts == 3
    router = builder.build_router()
    assert isinstance(router, SwitchRouter) and router.num_experts == 3
    default = ModelBuilder(APTConfig(d_model=32)).build_router(num_experts=5)
    assert isinstance(default, TopKRouter) and default.num_experts == 5 and default.top_k == 2


def test_build_model_returns_transformer_with_one_block_per_layer():
    model = ModelBuilder(APTConfig(d_model=32, num_heads=4, num_layers=3, vocab_size=50)).build_model()
    assert isinstance(model, TransformerLM) and len(model.blocks) == 3
    for block in model.blocks:
        assert {"attn", "ffn", "norm1", "norm2"} <= set(dict(block.named_children()))


def test_mapping_config_is_accepted():
    builder = ModelBuilder({"d_model": 32, "num_heads": 2, "ffn_name": "swiglu"})
    assert isinstance(builder.build_ffn(), SwiGLU)
