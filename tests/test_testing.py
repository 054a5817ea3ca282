"""The conformance kit must fail on broken providers, naming the provider and the property."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from apt.core import AttentionProvider, FFNProvider, RouterProvider
from apt.providers.attention import CausalSelfAttention, SDPAAttentionProvider
from apt.providers.ffn import MLP
from apt.providers.router import RouterOutput, TopKRouter, TopKRouterProvider
from apt.testing import check_attention_provider, check_ffn_provider, check_router_provider


def attention_provider(layer_cls: type[nn.Module], name: str = "broken") -> AttentionProvider:
    class Provider(AttentionProvider):
        def get_name(self) -> str:
            return name

        def create_layer(self, d_model, num_heads, dropout=0.0, **kwargs):
            return layer_cls(d_model, num_heads, dropout)

    return Provider({})


class NonCausal(CausalSelfAttention):
    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=False)


class UnusedParameter(CausalSelfAttention):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.forgotten = nn.Parameter(torch.zeros(3))


class WrongScale(CausalSelfAttention):
    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)


class UpcastsOutput(CausalSelfAttention):
    def forward(self, x):
        return super().forward(x).float()


class DetachesInput(CausalSelfAttention):
    def forward(self, x):
        return super().forward(x.detach())


class Unseeded(CausalSelfAttention):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        gen = torch.Generator().manual_seed(torch.seed())  # ignores the global seed
        with torch.no_grad():
            self.c_attn.weight.copy_(torch.randn(self.c_attn.weight.shape, generator=gen))


@pytest.mark.parametrize(
    ("layer_cls", "kwargs", "match"),
    [
        (NonCausal, {}, "attention provider 'broken' \\(position=learned\\): \\[torch.float32\\] not causal"),
        (UnusedParameter, {}, "parameter 'forgotten' gets no gradient"),
        (WrongScale, {"reference": "naive"}, "differs from the reference"),
        (UpcastsOutput, {}, "\\[torch.bfloat16\\] output dtype torch.float32 != input dtype torch.bfloat16"),
        (DetachesInput, {}, "no finite gradient reaches the input"),
        (Unseeded, {}, "same seed have different weights"),
    ],
)
def test_attention_kit_catches_broken_layers(layer_cls, kwargs, match):
    with pytest.raises(AssertionError, match=match):
        check_attention_provider(attention_provider(layer_cls), **kwargs)


def test_attention_kit_checks_rope_when_supported():
    class LeaksWithRope(SDPAAttentionProvider):
        def create_layer(self, d_model, num_heads, dropout=0.0, *, position="learned", **kwargs):
            cls = NonCausal if position == "rope" else CausalSelfAttention
            return cls(d_model, num_heads, dropout)

    with pytest.raises(AssertionError, match="position=rope.*not causal"):
        check_attention_provider(LeaksWithRope({}))
    check_attention_provider(LeaksWithRope({}), rope=False)


def test_kit_accepts_names_classes_and_instances():
    check_attention_provider("sdpa", dtypes=(torch.float32,))
    check_attention_provider(SDPAAttentionProvider, dtypes=(torch.float32,), rope=False)
    check_attention_provider(SDPAAttentionProvider({}), dtypes=(torch.float32,), d_model=24, num_heads=3, seq_len=5)


class MixesPositions(MLP):
    def forward(self, x):
        return super().forward(x) + x.mean(dim=1, keepdim=True)


class ZeroGrad(MLP):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dead = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return super().forward(x) + 0.0 * self.dead.sum()


def ffn_provider(layer_cls: type[nn.Module], **layer_kwargs) -> FFNProvider:
    class Provider(FFNProvider):
        def get_name(self) -> str:
            return "broken_ffn"

        def create_layer(self, d_model, d_ff, dropout=0.0, **kwargs):
            return layer_cls(d_model, d_ff, dropout, **layer_kwargs)

    return Provider({})


def test_ffn_kit_catches_broken_layers():
    with pytest.raises(AssertionError, match="ffn provider 'broken_ffn': \\[torch.float32\\] not position-wise"):
        check_ffn_provider(ffn_provider(MixesPositions))
    check_ffn_provider(ffn_provider(MixesPositions), pointwise=False)  # the rest of it is fine
    with pytest.raises(AssertionError, match="parameter 'dead' has an all-zero gradient"):
        check_ffn_provider(ffn_provider(ZeroGrad))
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_ffn_provider(ffn_provider(MLP, activation="relu"), reference="mlp")


def router_provider(router_cls: type[nn.Module]) -> RouterProvider:
    class Provider(RouterProvider):
        def get_name(self) -> str:
            return "broken_router"

        def create_router(self, d_model, num_experts, **kwargs):
            return router_cls(d_model, num_experts)

    return Provider({})


class LowPrecisionRouter(TopKRouter):
    def forward(self, x):
        out = super().forward(x)
        return out._replace(probs=out.probs.to(x.dtype))


class NoTemperature(nn.Module):
    def __init__(self, d_model, num_experts):
        super().__init__()
        self.gate = nn.Linear(d_model, num_experts)
        self.top_k = 1

    def forward(self, x):
        logits = self.gate(x).float()
        probs = logits.softmax(-1)
        w, i = probs.topk(1)
        return RouterOutput(i, w, probs, logits)


class RepeatsExperts(TopKRouter):
    def forward(self, x):
        out = super().forward(x)
        return out._replace(indices=out.indices[:, :1].expand(-1, 2))


@pytest.mark.parametrize(
    ("router_cls", "match"),
    [
        (LowPrecisionRouter, "\\[torch.bfloat16\\] probs must be float32"),
        (NoTemperature, "no settable `temperature`"),
        (RepeatsExperts, "picked the same expert twice"),
    ],
)
def test_router_kit_catches_broken_routers(router_cls, match):
    with pytest.raises(AssertionError, match=f"router provider 'broken_router': .*{match}"):
        check_router_provider(router_provider(router_cls))


def test_router_kit_checks_what_the_provider_says_about_its_combine_weights():
    class SaysTheySumToOne(TopKRouterProvider):
        def combine_weights_sum_to_one(self, num_experts, top_k, **kwargs):
            return True

    class SaysTheyDoNot(TopKRouterProvider):
        def combine_weights_sum_to_one(self, num_experts, top_k, **kwargs):
            return False

    with pytest.raises(AssertionError, match="says True, but a built router's weights sum to one within 0\\.[1-9]"):
        check_router_provider(SaysTheySumToOne({"normalize": False}), top_k=2)
    with pytest.raises(AssertionError, match="says False, but a built router's weights sum to one within"):
        check_router_provider(SaysTheyDoNot({}), top_k=2)
    check_router_provider(SaysTheySumToOne({}), top_k=2)  # renormalised: true
