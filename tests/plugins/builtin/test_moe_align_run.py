"""moe + align + schedule through the real app: enablement per epoch and per step, what is
optimised and logged from the very step a plugin starts, annealing, exact resume.

Composes the real conf/ tree (tiny model, synthetic data) with tests.helpers.compose_cfg, and
compares metrics.csv of resumed runs with an uninterrupted one row by row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apt.app import new_plugin_manager
from apt.plugins import Plugin
from tests.helpers import compose_cfg, read_csv, train

BASE = [
    "optim.warmup_steps=2",
    "trainer.max_epochs=4",
    "trainer.max_steps=null",
    "trainer.steps_per_epoch=3",
    "trainer.log_every=1",
    "trainer.eval_every=100",
    "trainer.checkpoint_every=1",
    "trainer.keep_last=20",
    "model.dropout=0.1",
]
MOE_ALIGN = ["plugin=[moe,align]", "schedule=moe_align"]


def _cfg(tmp_path, *overrides):
    return compose_cfg(*BASE, *overrides, cache_dir=tmp_path / "cache")


def _train(cfg, out: Path, *, pm=None) -> list[dict[str, str]]:
    train(cfg, out, plugin_manager=pm)
    return read_csv(out / "metrics.csv")


class LossProbe(Plugin):
    """Per step: the forward's cross-entropy and the loss handed to backward (grad_accum 1)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.ce: dict[int, float] = {}
        self.total: dict[int, float] = {}

    def get_name(self):
        return "probe"

    def on_batch_end(self, outputs=None, step=None, **kwargs):
        self.ce[step] = float(outputs[1].detach())

    def on_backward_begin(self, loss=None, step=None, **kwargs):
        self.total[step] = float(loss.detach())


@pytest.mark.parametrize("strict", [True, False], ids=["strict-hooks", "isolated-hooks"])
def test_router_and_align_losses_count_from_the_step_each_plugin_starts(tmp_path, strict):
    """MoE from step 3 and align from step 5, mid-epoch, no evaluation in between: the router
    losses are in the optimised loss at step 3, align's at step 5, and metrics.csv says so:
    train_loss is the cross-entropy, loss/total what backward got, loss/<name> each term."""
    pm = new_plugin_manager(strict=strict)
    pm.register_plugin("probe", LossProbe)
    cfg = _cfg(tmp_path, "plugin=[moe,align]", "+plugin.probe={}", "schedule=default",
               "+schedule.enable_moe_at_step=3", "+schedule.enable_align_at_step=5", "trainer.max_epochs=null",
               "trainer.max_steps=7", "trainer.steps_per_epoch=7", "plugin.align.alpha=2.0")
    rows = {int(r["step"]): r for r in _train(cfg, tmp_path / "run", pm=pm)}
    probe = pm.get_plugin("probe")
    assert sorted(rows) == sorted(probe.ce) == list(range(1, 8))
    for step, r in rows.items():
        terms = {k: float(v) for k, v in r.items() if k.startswith("loss/") and k != "loss/total" and v}
        assert float(r["train_loss"]) == pytest.approx(probe.ce[step], rel=1e-5), step  # csv: 6 digits
        assert float(r["loss/total"]) == pytest.approx(probe.total[step], rel=1e-5), step
        assert probe.total[step] - probe.ce[step] == pytest.approx(sum(terms.values()), abs=1e-5), step
        assert ("loss/balance" in terms and "loss/z" in terms) == (step >= 3), (step, terms)
        assert ("loss/align" in terms) == (step >= 5), (step, terms)
    assert all(float(rows[s]["loss/balance"]) > 0 and float(rows[s]["loss/z"]) > 0 for s in range(3, 8))
    assert probe.total[2] == probe.ce[2] and probe.total[3] > probe.ce[3]
    assert all(float(rows[s]["loss/align"]) > 0 for s in range(5, 8))  # dropout: the student differs at once


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return tmp, _train(_cfg(tmp, *MOE_ALIGN), tmp / "run")


def test_dense_then_moe_then_align_with_annealed_temperature(full):
    _, rows = full
    by_epoch: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        by_epoch.setdefault(int(r["epoch"]), []).append(r)
    assert sorted(by_epoch) == [1, 2, 3, 4]
    assert all(not r["moe_dropped_frac"] for r in by_epoch[1])  # dense in epoch 1
    assert all(r["moe_dropped_frac"] for e in (2, 3, 4) for r in by_epoch[e])
    assert all(not r["loss/align"] for e in (1, 2) for r in by_epoch[e])
    assert all(r["loss/align"] for e in (3, 4) for r in by_epoch[e])
    temps = [float(by_epoch[e][0]["schedule/route_temp"]) for e in (1, 2, 3, 4)]
    assert temps == pytest.approx([1.5, 1.26667, 1.03333, 0.8], abs=1e-4)
    # the plugin's per-epoch means land in the last row of their epoch
    assert [float(by_epoch[e][-1]["moe/temperature"]) for e in (2, 3, 4)] == pytest.approx(
        temps[1:], abs=1e-4
    )
    assert 0 < float(by_epoch[2][-1]["moe/load_entropy"]) <= 1
    assert [r["step"] for r in rows if r["moe/upcycle_loss_delta"]] == [by_epoch[2][-1]["step"]]
    assert float(by_epoch[3][-1]["align/alpha"]) == pytest.approx(0.35)


@pytest.mark.parametrize(
    "ckpt_step", [3, 4, 6, 7]
)  # before/after moe (epoch 2), before/after align (epoch 3)
def test_resume_around_each_enable_point_matches_uninterrupted(full, ckpt_step):
    tmp, rows = full
    ckpt = tmp / "run" / "checkpoints" / f"step-{ckpt_step:08d}.pt"
    resumed = _train(_cfg(tmp, *MOE_ALIGN, f"ckpt_path={ckpt}"), tmp / f"resumed-{ckpt_step}")
    assert len(resumed) == len(rows)
    for a, b in zip(rows, resumed, strict=True):
        for key in ("step", "epoch", "train_loss", "val_loss", "loss/total", "loss/balance", "loss/align",
                    "moe_dropped_frac"):
            assert a[key] == b[key], (key, a["step"])


def test_early_stopping_patience_survives_resume(tmp_path):
    common = [
        "plugin=[early_stopping]",
        "schedule=default",
        "trainer.eval_every=1",
        "plugin.early_stopping.patience=4",
        "plugin.early_stopping.min_delta=100.0",
    ]
    full = _train(_cfg(tmp_path, *common), tmp_path / "full")
    stop_step = int(full[-1]["step"])
    assert stop_step == 5  # best at step 1, then 4 validations without a 100.0 improvement
    ckpt = tmp_path / "full" / "checkpoints" / "step-00000003.pt"
    resumed = _train(_cfg(tmp_path, *common, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert int(resumed[-1]["step"]) == stop_step  # the wait counter came back with the checkpoint
