"""Warmup-stable-decay: peak lr until the cooldown, then linear to min_lr_ratio."""

from __future__ import annotations

import pytest
import torch

from apt.training.lr import WarmupCosine


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_wsd_holds_the_peak_then_decays_linearly_over_the_cooldown():
    lr = WarmupCosine(_opt(), warmup_steps=2, total_steps=20, decay="wsd", min_lr_ratio=0.1, cooldown_fraction=0.25)
    assert [lr.factor(s) for s in range(2)] == pytest.approx([0.5, 1.0])
    assert all(lr.factor(s) == 1.0 for s in range(2, 15))  # 20 - 5 cooldown steps
    assert [lr.factor(s) for s in range(15, 20)] == pytest.approx([1.0, 0.82, 0.64, 0.46, 0.28])
    assert lr.factor(20) == pytest.approx(0.1) and lr.factor(50) == pytest.approx(0.1)
    assert lr.state_dict()["cooldown_fraction"] == 0.25


def test_wsd_default_cooldown_is_a_fifth_of_the_steps():
    lr = WarmupCosine(_opt(), warmup_steps=0, total_steps=100, decay="wsd", min_lr_ratio=0.0)
    assert lr.factor(79) == 1.0 and lr.factor(80) == 1.0 and lr.factor(90) == pytest.approx(0.5)


def test_cooldown_fraction_is_checked_and_only_taken_by_wsd():
    with pytest.raises(ValueError, match=r"optim.cooldown_fraction applies to optim.decay=wsd only"):
        WarmupCosine(_opt(), warmup_steps=0, total_steps=10, decay="cosine", cooldown_fraction=0.2)
    with pytest.raises(ValueError, match=r"optim.cooldown_fraction must be in \(0, 1\], got 0"):
        WarmupCosine(_opt(), warmup_steps=0, total_steps=10, decay="wsd", cooldown_fraction=0)
