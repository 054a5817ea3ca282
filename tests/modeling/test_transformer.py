"""TransformerLM: shapes, loss, init, causality, positions, sampling, aux losses and metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from apt.core import APTConfig
from apt.modeling import ModelBuilder, RMSNorm, Rotary, TransformerLM
from apt.modeling.auxiliary import collect_aux_losses
from apt.modeling.layers import LayerNorm, apply_rotary
from apt.moe import MoELayer, TopKRouter

V = 61


def build(**kw) -> TransformerLM:
    torch.manual_seed(0)
    base = {"d_model": 32, "num_heads": 4, "num_layers": 2, "vocab_size": V, "max_seq_len": 32}
    return ModelBuilder(APTConfig(**{**base, **kw})).build_model()


def test_forward_shapes_and_initial_loss_near_uniform():
    model = build()
    idx = torch.randint(0, V, (3, 20))
    logits, loss = model(idx)
    assert logits.shape == (3, 20, V) and loss is None
    logits, loss = model(idx, torch.randint(0, V, (3, 20)))
    assert loss.dim() == 0
    assert abs(loss.item() - math.log(V)) < 0.2  # small init: near-uniform predictions


def test_loss_ignores_minus_one_targets():
    model = build()
    idx = torch.randint(0, V, (2, 10))
    targets = idx.clone()
    targets[:, 5:] = -1
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, :5].reshape(-1, V), idx[:, :5].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_weight_tying_and_param_count():
    model = build()
    assert model.wte.weight is model.lm_head.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())
    assert model.num_params(non_embedding=True) == model.num_params() - 32 * 32


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    model = ModelBuilder(APTConfig(d_model=256, num_heads=4, num_layers=8, vocab_size=V)).build_model()
    residual_std = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.ffn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("attention", ["sdpa", "naive", "autopoietic"])
def test_model_is_causal(position, attention):
    model = build(position=position, attention_name=attention).eval()
    idx = torch.randint(0, V, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % V
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_norm_bias_and_position_options():
    model = build(norm="rmsnorm", position="rope")
    assert isinstance(model.blocks[0].norm1, RMSNorm) and isinstance(model.norm_f, RMSNorm)
    assert model.wpe is None and model.blocks[0].attn.rotary is not None
    model = build(bias=True)
    assert isinstance(model.norm_f, LayerNorm) and model.norm_f.bias is not None
    assert model.blocks[0].attn.c_attn.bias is not None and model.wpe is not None
    assert build().blocks[0].attn.c_attn.bias is None


def test_rotary_scores_depend_on_relative_position_only():
    rot = Rotary(8, 32)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> float:
        qs = apply_rotary(q.expand(32, 8), rot.cos, rot.sin)[m]
        ks = apply_rotary(k.expand(32, 8), rot.cos, rot.sin)[n]
        return float(qs @ ks)

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    assert apply_rotary(q.expand(32, 8), rot.cos, rot.sin)[0].tolist() == pytest.approx(q.tolist())


def test_too_long_sequence_is_rejected():
    with pytest.raises(ValueError, match="sequence length 33 exceeds max_seq_len=32"):
        build()(torch.zeros(1, 33, dtype=torch.long))


def test_generate_appends_tokens_and_greedy_is_deterministic():
    model = build().eval()
    idx = torch.randint(0, V, (2, 5))
    out = model.generate(idx, 7, temperature=1.0, top_k=5)
    assert out.shape == (2, 12) and torch.equal(out[:, :5], idx)
    greedy = model.generate(idx, 7, temperature=0.0)
    assert torch.equal(greedy, model.generate(idx, 7, temperature=0.0))
    assert torch.equal(greedy, model.generate(idx, 7, top_k=1))
    long = model.generate(idx, 40, temperature=0.0)  # crops its context to max_seq_len
    assert long.shape == (2, 45)


def test_a_few_steps_fit_a_repeating_sequence():
    model = build(dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.arange(24).remainder(6).view(1, 24).repeat(4, 1)
    first = None
    for _ in range(40):
        _, loss = model(data[:, :-1], data[:, 1:])
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_dense_model_adds_no_aux_losses_and_has_no_metrics():
    model = build()
    with collect_aux_losses() as aux:
        model(torch.randint(0, V, (2, 8)))
    assert aux == {} and model.metrics() == {}


def test_moe_model_adds_router_losses_and_reports_layer_statistics():
    model = build(ffn_name="moe", ffn_config={"num_experts": 4, "top_k": 2, "capacity_factor": 0.5})
    idx = torch.randint(0, V, (2, 16))
    with collect_aux_losses() as aux:
        _, loss = model(idx, idx)
    assert set(aux) == {"balance", "z"}
    (loss + sum(aux.values())).backward()
    assert model.blocks[0].ffn.router.gate.weight.grad is not None
    metrics = model.metrics()
    assert 0.0 < metrics["moe_dropped_frac"] < 1.0  # capacity 0.5 must drop tokens
    assert metrics["moe_load_max"] >= 1.0 and "router_entropy" in metrics
    assert set(metrics) == {"moe_dropped_frac", "moe_load_max", "router_entropy"}


def test_a_layer_swapped_in_after_construction_adds_its_losses_at_once():
    model = build()
    dense = model.blocks[1].ffn
    model.blocks[1].ffn = MoELayer([copy.deepcopy(dense) for _ in range(2)], TopKRouter(32, 2, top_k=1), 1)
    with collect_aux_losses() as aux:
        model(torch.randint(0, V, (2, 8)))
    assert set(aux) == {"balance", "z"}
    assert model.metrics()["moe_dropped_frac"] == 0.0


@pytest.mark.parametrize("attention", ["sdpa", "naive", "autopoietic"])
def test_dropout_is_active_in_training_only(attention):
    model = build(dropout=0.2, attention_name=attention)
    idx = torch.randint(0, V, (2, 8))
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_rotary_equals_the_rotate_half_formula_bitwise_values_and_gradients():
    rot = Rotary(16, 32)
    q = torch.randn(2, 3, 32, 16, requires_grad=True)
    k = torch.randn(2, 3, 32, 16, requires_grad=True)
    cos, sin = rot.cos, rot.sin

    def formula(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    got_q, got_k = rot(q, k)
    assert torch.equal(got_q, formula(q)) and torch.equal(got_k, formula(k))
    assert torch.equal(apply_rotary(q, cos, sin), formula(q))
    w = torch.randn_like(got_q)
    assert torch.equal(torch.autograd.grad((got_q * w).sum(), q)[0], torch.autograd.grad((formula(q) * w).sum(), q)[0])
