"""APT's transformer as a standard Hugging Face architecture: GPT-2 or Llama, exactly, or refused.

An APT model is exportable when every part of it has an exact counterpart:

- GPT-2: learned positions, LayerNorm, a GELU/ReLU/SiLU ``mlp`` FFN. APT's optional biases
  become GPT-2's (always present) biases set to zero; ``c_attn``/``c_proj``/``c_fc`` are
  transposed into GPT-2's Conv1D layout (in, out).
- Llama: rotary positions (rotate-half layout, ``rope_base`` as rope_theta), RMSNorm, the
  ``swiglu`` FFN (its fused gate/up projection split into gate_proj and up_proj); APT's
  bias maps to attention_bias and mlp_bias.

Both keep APT's pre-norm blocks, tied embeddings (or an untied head), norm epsilon, head
count and widths as read from the modules themselves. Anything else (an attention or FFN
module of another type, MoE layers, autopoietic attention, a parameter the mapping does not
use, a mixed recipe such as rope with LayerNorm) raises :class:`ExportError` naming it:
a converted model that computed something else would be worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from apt.modeling.layers import LayerNorm, RMSNorm
from apt.modeling.transformer import Block, TransformerLM
from apt.providers.attention import CausalSelfAttention, NaiveCausalSelfAttention
from apt.providers.ffn import MLP, SwiGLU
from apt.providers.flash import FlashCausalSelfAttention

__all__ = ["ARCHITECTURES", "ExportError", "HFModel", "to_hf"]

#: Attention modules that compute exactly ``softmax(QK^T / sqrt(hs) + causal) V`` with c_attn/c_proj.
PLAIN_ATTENTION = (CausalSelfAttention, NaiveCausalSelfAttention, FlashCausalSelfAttention)
#: APT's ``mlp`` activation -> GPT-2's ``activation_function`` (same function, not an approximation).
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}
ARCHITECTURES = ("gpt2", "llama")


class ExportError(ValueError):
    """The model cannot be written as a standard architecture; the message names what and why."""


@dataclass
class HFModel:
    """A Hugging Face ``config`` (kwargs of the config class) and its state dict."""

    architecture: str  # "gpt2" or "llama"
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def to_hf(model: nn.Module) -> HFModel:
    """The exact GPT-2 or Llama equivalent of ``model`` (raises ExportError otherwise)."""
    if type(model) is not TransformerLM:
        raise ExportError(f"the model is a {type(model).__name__}, not APT's TransformerLM")
    blocks = list(model.blocks)
    for i, b in enumerate(blocks):
        if type(b) is not Block:
            raise ExportError(f"block {i} is a {type(b).__name__}, not APT's pre-norm Block")
        if type(b.attn) not in PLAIN_ATTENTION:
            raise ExportError(f"block {i} attention is {type(b.attn).__name__} ({_provider_hint(b.attn)}): "
                              "no standard architecture computes it; export format=safetensors instead")
        if type(b.ffn) not in (MLP, SwiGLU):
            raise ExportError(f"block {i} FFN is {type(b.ffn).__name__} ({_provider_hint(b.ffn)}): "
                              "no standard architecture computes it; export format=safetensors instead")
    norms = [m for b in blocks for m in (b.norm1, b.norm2)] + [model.norm_f]
    ffn_types = {type(b.ffn) for b in blocks}
    rope = {b.attn.rotary is not None for b in blocks}
    if len(ffn_types) > 1 or len(rope) > 1 or len({type(n) for n in norms}) > 1:
        raise ExportError("the blocks mix FFN, norm or position kinds; a standard architecture uses one of each")
    recipe = (model.config.position, type(norms[0]), ffn_types.pop())
    if recipe == ("learned", LayerNorm, MLP) and rope == {False}:
        hf = _gpt2(model, blocks)
    elif recipe == ("rope", RMSNorm, SwiGLU) and rope == {True}:
        hf = _llama(model, blocks)
    else:
        position, norm, ffn = recipe
        raise ExportError(
            f"position={position}, norm={norm.__name__}, ffn={ffn.__name__} matches no standard architecture: "
            "GPT-2 is learned/LayerNorm/mlp, Llama is rope/RMSNorm/swiglu; export format=safetensors instead")
    _check_everything_mapped(model, hf)
    return hf


# -- GPT-2 -----------------------------------------------------------------------------------
def _gpt2(model: TransformerLM, blocks: list[Block]) -> HFModel:
    C, H = model.config.d_model, blocks[0].attn.num_heads
    acts = {b.ffn.activation for b in blocks}
    (act,) = acts if len(acts) == 1 else (None,)
    if act not in GPT2_ACTIVATIONS:
        raise ExportError(f"mlp activation(s) {sorted(acts)} have no GPT-2 activation_function")
    d_ff = blocks[0].ffn.c_fc.out_features
    p = model.config.dropout
    config = {"vocab_size": model.wte.num_embeddings, "n_positions": model.wpe.num_embeddings, "n_embd": C,
              "n_layer": len(blocks), "n_head": H, "n_inner": d_ff, "activation_function": GPT2_ACTIVATIONS[act],
              "layer_norm_epsilon": _one_eps(model, blocks), "resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p,
              "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
              "reorder_and_upcast_attn": False, "tie_word_embeddings": _tied(model),
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    sd: dict[str, torch.Tensor] = {"transformer.wte.weight": model.wte.weight,
                                   "transformer.wpe.weight": model.wpe.weight}
    for i, b in enumerate(blocks):
        pre = f"transformer.h.{i}."
        _norm(sd, pre + "ln_1", b.norm1)
        _norm(sd, pre + "ln_2", b.norm2)
        for name, lin in (("attn.c_attn", b.attn.c_attn), ("attn.c_proj", b.attn.c_proj),
                          ("mlp.c_fc", b.ffn.c_fc), ("mlp.c_proj", b.ffn.c_proj)):
            sd[pre + name + ".weight"] = lin.weight.t()  # Conv1D: (in, out)
            sd[pre + name + ".bias"] = _bias(lin)
    _norm(sd, "transformer.ln_f", model.norm_f)
    if not config["tie_word_embeddings"]:
        sd["lm_head.weight"] = model.lm_head.weight
    return HFModel("gpt2", config, sd)


# -- Llama -----------------------------------------------------------------------------------
def _llama(model: TransformerLM, blocks: list[Block]) -> HFModel:
    C, H = model.config.d_model, blocks[0].attn.num_heads
    d_ff = blocks[0].ffn.c_proj.in_features
    bias = blocks[0].attn.c_attn.bias is not None
    if any((b.attn.c_attn.bias is not None) != bias or (b.ffn.c_fc.bias is not None) != bias for b in blocks):
        raise ExportError("some layers have biases and others not; Llama sets them for all layers at once")
    rotary = blocks[0].attn.rotary
    config = {"vocab_size": model.wte.num_embeddings, "hidden_size": C, "intermediate_size": d_ff,
              "num_hidden_layers": len(blocks), "num_attention_heads": H, "num_key_value_heads": H,
              "head_dim": C // H, "hidden_act": "silu", "max_position_embeddings": rotary.max_seq_len,
              "rms_norm_eps": _one_eps(model, blocks), "rope_theta": float(model.config.rope_base),
              "attention_bias": bias, "mlp_bias": bias, "attention_dropout": 0.0,
              "tie_word_embeddings": _tied(model), "bos_token_id": None, "eos_token_id": None,
              "pad_token_id": None}
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.wte.weight}
    for i, b in enumerate(blocks):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"] = b.norm1.weight
        sd[pre + "post_attention_layernorm.weight"] = b.norm2.weight
        for name, part in zip(("q_proj", "k_proj", "v_proj"), range(3), strict=True):
            _linear(sd, pre + "self_attn." + name, b.attn.c_attn, slice(part * C, (part + 1) * C))
        _linear(sd, pre + "self_attn.o_proj", b.attn.c_proj)
        _linear(sd, pre + "mlp.gate_proj", b.ffn.c_fc, slice(0, d_ff))  # SwiGLU: gate first, then up
        _linear(sd, pre + "mlp.up_proj", b.ffn.c_fc, slice(d_ff, 2 * d_ff))
        _linear(sd, pre + "mlp.down_proj", b.ffn.c_proj)
    sd["model.norm.weight"] = model.norm_f.weight
    if not config["tie_word_embeddings"]:
        sd["lm_head.weight"] = model.lm_head.weight
    return HFModel("llama", config, sd)


# -- helpers ---------------------------------------------------------------------------------
def _provider_hint(module: nn.Module) -> str:
    name = type(module).__name__
    if "MoE" in name or hasattr(module, "experts"):
        return "mixture of experts, e.g. the moe provider or plugin's upcycling"
    if "Autopoietic" in name:
        return "the autopoietic provider's self-perturbation"
    return f"from {type(module).__module__}"


def _one_eps(model: TransformerLM, blocks: list[Block]) -> float:
    eps = {float(n.eps) for b in blocks for n in (b.norm1, b.norm2)} | {float(model.norm_f.eps)}
    if len(eps) > 1:
        raise ExportError(f"norms use different epsilons {sorted(eps)}; the config has one")
    return eps.pop()


def _tied(model: TransformerLM) -> bool:
    return model.lm_head.weight is model.wte.weight


def _bias(lin: nn.Linear) -> torch.Tensor:
    return lin.bias if lin.bias is not None else torch.zeros(lin.out_features, dtype=lin.weight.dtype)


def _norm(sd: dict[str, torch.Tensor], name: str, norm: nn.LayerNorm) -> None:
    sd[name + ".weight"] = norm.weight
    sd[name + ".bias"] = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)


def _linear(sd: dict[str, torch.Tensor], name: str, lin: nn.Linear, rows: slice = slice(None)) -> None:
    sd[name + ".weight"] = lin.weight[rows]
    if lin.bias is not None:
        sd[name + ".bias"] = lin.bias[rows]


def _check_everything_mapped(model: TransformerLM, hf: HFModel) -> None:
    """Every parameter and persistent buffer of ``model`` must be in the export, or it is refused.

    A parameter that a plugin attached to the model would otherwise be dropped silently.
    """
    used = {t.untyped_storage().data_ptr() for t in hf.state_dict.values()}
    missing = [name for name, t in model.state_dict().items() if t.untyped_storage().data_ptr() not in used]
    if missing:
        raise ExportError(f"{len(missing)} tensor(s) have no place in {hf.architecture}: {missing[:5]}")
