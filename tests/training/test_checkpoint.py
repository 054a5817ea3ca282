"""Checkpoint files: atomic, pruned, weights_only-safe, clear errors."""

from __future__ import annotations

import pytest
import torch

from apt.training.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from apt.training.lr import WarmupCosine


def test_save_load_prune(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        mgr.save({"w": torch.full((2,), float(step)), "meta": {"step": step, "t": (1, 2)}}, step)
    assert [p.name for p in mgr.checkpoints()] == ["step-00000002.pt", "step-00000003.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    path, state = mgr.load_latest()
    assert path.name == "step-00000003.pt" and state["w"].tolist() == [3.0, 3.0]
    assert state["meta"] == {"step": 3, "t": (1, 2)}


def test_corrupt_and_foreign_files_name_the_file(tmp_path):
    bad = tmp_path / "step-00000009.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="step-00000009.pt.*corrupt or truncated"):
        load_checkpoint(bad)
    foreign = tmp_path / "other.pt"
    torch.save({"x": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an APT checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unsafe_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "apt-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_load_latest_falls_back_over_truncated(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save({"v": 1}, 1)
    p2 = mgr.save({"v": 2}, 2)
    p2.write_bytes(p2.read_bytes()[:20])
    path, state = mgr.load_latest()
    assert path.name == "step-00000001.pt" and state["v"] == 1


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = WarmupCosine(opt, warmup_steps=4, total_steps=14, decay="cosine", min_lr_ratio=0.1)
    assert [lr.factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr.factor(4) == pytest.approx(1.0)
    assert lr.factor(9) == pytest.approx(0.55)  # halfway: 0.1 + 0.9 * 0.5
    assert lr.factor(14) == pytest.approx(0.1) and lr.factor(100) == pytest.approx(0.1)
    assert lr.apply(9) == pytest.approx(0.55) and opt.param_groups[0]["lr"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="not one of"):
        WarmupCosine(opt, warmup_steps=0, total_steps=1, decay="step")
