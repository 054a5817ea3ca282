"""optim=muon through the real app: an MoE upcycle mid-run moves each part's parameters, and a
run resumed from a checkpoint before or after the upcycle equals the uninterrupted
one exactly: every metrics row, the final weights and both optimizers' states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import compose_cfg, read_csv, train

BASE = ["optim=muon", "optim.warmup_steps=2",
        "optim.decay=wsd", "optim.cooldown_fraction=0.5", "plugin=[moe]", "schedule=default",
        "+schedule.enable_moe_at_step=3", "trainer.max_steps=6", "trainer.log_every=1", "trainer.eval_every=100",
        "trainer.checkpoint_every=1", "trainer.keep_last=20", "model.dropout=0.1"]


def _train(tmp: Path, out: Path, *overrides: str) -> list[dict[str, str]]:
    train(compose_cfg(*BASE, *overrides, cache_dir=tmp / "cache"), out, strict=False)
    return read_csv(out / "metrics.csv")


def _final(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "step-00000006.pt", map_location="cpu", weights_only=False)


def _assert_equal(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("muon_moe")
    return tmp, _train(tmp, tmp / "run")


def test_the_upcycle_gives_muon_the_expert_matrices_and_adamw_the_rest(full):
    tmp, rows = full
    parts = _final(tmp / "run")["optimizer"]["parts"]
    assert list(parts) == ["default", "hidden"]
    n_dense = sum(len(g["params"]) for g in torch.load(tmp / "run" / "checkpoints" / "step-00000002.pt",
                                                         weights_only=False)["optimizer"]["parts"]["hidden"]
                  ["param_groups"])
    n_moe = sum(len(g["params"]) for g in parts["hidden"]["param_groups"])
    layers = 2  # model=tiny, per block: attention 2 matrices, FFN 2 -> 4 experts x 2 + a router matrix
    assert n_dense == (2 + 2) * layers and n_moe == (2 + 4 * 2 + 1) * layers
    assert all("momentum_buffer" in s for s in parts["hidden"]["state"].values())
    assert [r["step"] for r in rows if r["moe_dropped_frac"]] == ["3", "4", "5", "6"]


@pytest.mark.slow
@pytest.mark.parametrize("ckpt_step", [2, 4])  # before the upcycle at step 3 (it happens in the resumed run), after it
def test_resume_across_the_upcycle_equals_the_uninterrupted_run(full, ckpt_step):
    tmp, rows = full
    ckpt = tmp / "run" / "checkpoints" / f"step-{ckpt_step:08d}.pt"
    resumed = _train(tmp, tmp / f"resumed-{ckpt_step}", f"ckpt_path={ckpt}")
    assert [r["step"] for r in resumed] == [r["step"] for r in rows]
    for a, b in zip(rows, resumed, strict=True):
        for key in ("train_loss", "val_loss", "loss/total", "loss/balance", "lr", "moe_dropped_frac"):
            assert a.get(key) == b.get(key), (key, a["step"])
    want, got = _final(tmp / "run"), _final(tmp / f"resumed-{ckpt_step}")
    _assert_equal(want["model"], got["model"], "model")
    _assert_equal(want["optimizer"], got["optimizer"], "optimizer")
