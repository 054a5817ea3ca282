"""A causal LM with MoE stays causal: with the shipped defaults of the ``moe`` FFN provider
and of the ``moe`` plugin, changing the tokens at positions >= t of one sequence changes no
logit before t and nothing in the other sequences, in training and in eval mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from apt.core.config import APTConfig
from apt.modeling import ModelBuilder
from apt.plugins.builtin.moe import MoEPlugin
from tests.helpers import CONF

DIMS = dict(d_model=32, num_heads=2, num_layers=2, d_ff=64, vocab_size=64, max_seq_len=32, dropout=0.1)
B, T = 8, 32


def _options(path: Path, section: str | None = None) -> dict:
    data = yaml.safe_load(path.read_text())
    data = data[section] if section else data
    return {k: v for k, v in data.items() if k not in ("_target_", "name")}


def _provider_model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = APTConfig(**DIMS, ffn_name="moe", ffn_config=_options(CONF / "provider/ffn/moe.yaml"))
    return ModelBuilder(cfg).build_model()


def _upcycled_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = ModelBuilder(APTConfig(**DIMS)).build_model()
    plugin = MoEPlugin(_options(CONF / "plugin/moe.yaml", "moe"))
    assert plugin.validate_config()
    plugin.upcycle(model)
    return model


def _logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # the same dropout masks (and router noise, if any) for both inputs
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("make", [_provider_model, _upcycled_model], ids=["provider", "plugin"])
def test_perturbing_the_future_of_one_sequence_changes_nothing_else(make, mode):
    model = make()
    model.train(mode == "train")
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, DIMS["vocab_size"], (B, T), generator=gen)
    base = _logits(model, idx)
    for t in (1, T // 2, T - 1):
        changed = idx.clone()
        changed[0, t:] = (idx[0, t:] + 1 + torch.randint(0, 62, (T - t,), generator=gen)) % DIMS["vocab_size"]
        out = _logits(model, changed)
        past = (out[0, :t] - base[0, :t]).abs().max().item()
        others = (out[1:] - base[1:]).abs().max().item()
        assert past <= 1e-6, f"{mode}: changing positions >= {t} changed earlier logits by {past:.2e}"
        assert others <= 1e-6, f"{mode}: changing sequence 0 changed other sequences by {others:.2e}"
        assert (out[0, t:] - base[0, t:]).abs().max().item() > 1e-3  # the change itself is seen
