"""moe + align + schedule through the real app: enablement per epoch, annealing, exact resume.

Composes the real conf/ tree (tiny model, synthetic data) like tests/training does, and
compares metrics.csv of resumed runs with an uninterrupted one row by row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from apt.app import new_plugin_manager, run
from apt.training.schema import register_configs

CONF = Path(__file__).resolve().parents[3] / "conf"
BASE = [
    "model=tiny",
    "data=synthetic",
    "trainer=debug",
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
MOE_ALIGN = ["plugin=[moe,align]", "schedule=moe_align", "plugin.moe.capacity_factor=1.0"]


def _cfg(tmp_path, *overrides):
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            "config", overrides=[f"data.cache_dir={tmp_path / 'cache'}", *BASE, *overrides]
        )


def _train(cfg, out: Path) -> list[dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    run(cfg, out_dir=out, plugin_manager=new_plugin_manager(strict=True))
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


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
        for key in ("step", "epoch", "train_loss", "val_loss", "loss/align", "moe_dropped_frac"):
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
