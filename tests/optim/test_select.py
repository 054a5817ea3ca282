"""Parameter selectors: which parameter each named selector takes."""

from __future__ import annotations

import pytest

from apt.optim.select import SELECTORS, selects

# (name, ndim, is an embedding weight) -> the selectors that take it
CASES = [
    ("wte.weight", 2, True, {"matrices", "embeddings"}),
    ("wpe.weight", 2, True, {"matrices", "embeddings"}),
    ("blocks.0.attn.c_attn.weight", 2, False, {"hidden_matrices", "matrices"}),
    ("blocks.3.ffn.experts.1.c_fc.weight", 2, False, {"hidden_matrices", "matrices"}),
    ("blocks.0.ffn.router.gate.weight", 2, False, {"hidden_matrices", "matrices"}),
    ("blocks.0.norm1.weight", 1, False, {"vectors"}),
    ("blocks.0.attn.tau", 0, False, {"vectors"}),
    ("blocks.0.ffn.experts_w", 3, False, {"matrices"}),  # stacked experts: not a Muon matrix
    ("lm_head.weight", 2, False, {"matrices"}),  # an untied head outside the blocks
]


@pytest.mark.parametrize(("name", "ndim", "embedding", "takers"), CASES, ids=[c[0] for c in CASES])
def test_each_selector_takes_what_it_says(name, ndim, embedding, takers):
    assert {s for s in SELECTORS if selects(s, name, ndim, embedding=embedding)} == takers


def test_an_unknown_selector_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parameter selector 'hidden'; valid: \['embeddings', "):
        selects("hidden", "blocks.0.attn.c_attn.weight", 2, embedding=False)
