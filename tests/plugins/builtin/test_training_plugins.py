"""tensorboard, csv, checkpoint, nan_guard (with lr_monitor, throughput) in real runs of the app."""

from __future__ import annotations

import math

import pytest
import torch

from apt.app import new_plugin_manager
from apt.plugins.builtin.nan_guard import NaNGuardPlugin
from apt.training.checkpoint import load_checkpoint
from tests.helpers import Boom, compose_cfg, read_csv, train

from ._helpers import RecordingTrainer, tiny_model

BASE = [
    "optim.warmup_steps=2",
    "trainer.max_epochs=3",
    "trainer.max_steps=null",
    "trainer.steps_per_epoch=4",
    "trainer.log_every=2",
    "trainer.eval_every=4",
]


def _train(tmp_path, name, *overrides):
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("boom", Boom)
    out = tmp_path / name
    val = train(compose_cfg(*BASE, *overrides, cache_dir=tmp_path / "cache"), out, plugin_manager=pm)
    return val, out, pm


def test_research_plugins_in_one_run(tmp_path):
    val, out, _ = _train(
        tmp_path,
        "run",
        "plugin=[tensorboard,csv,checkpoint,nan_guard,lr_monitor,throughput]",
        "+plugin.boom={steps: [3]}",
        "plugin.throughput.every_n_steps=2",
    )
    assert math.isfinite(val)  # the NaN step was skipped, the weights stayed finite
    rows = read_csv(out / "metrics.csv")
    assert [r["nan_guard/skipped"] for r in rows if r["nan_guard/skipped"]] == ["1"]
    assert all(float(r["lr"]) > 0 for r in rows)
    assert all(float(r["throughput/tokens_per_s"]) > 0 for r in rows)
    epochs = read_csv(out / "epochs.csv")
    assert [e["epoch"] for e in epochs] == ["1", "2", "3"] and all(e["val_loss"] for e in epochs)
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["progress"]["step"] == min(
        (int(r["step"]) for r in rows if r["val_loss"]),
        key=lambda s: float(next(r["val_loss"] for r in rows if int(r["step"]) == s)),
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    train = [e.value for e in acc.Scalars("train_loss")]
    expected = [
        float(r["train_loss"])
        for r in rows
        if r["train_loss"] and math.isfinite(float(r["train_loss"]))
    ]
    assert train == pytest.approx(expected, rel=1e-5)
    assert [e.step for e in acc.Scalars("val_loss")] == [
        int(r["step"]) for r in rows if r["val_loss"]
    ]


def test_nan_guard_stops_with_a_checkpoint_after_max_skips(tmp_path, caplog):
    _, out, pm = _train(
        tmp_path,
        "run",
        "plugin=[nan_guard]",
        "plugin.nan_guard.max_skips=2",
        "+plugin.boom={steps: [2, 3, 4, 5]}",
    )
    rows = read_csv(out / "metrics.csv")
    assert int(rows[-1]["step"]) == 3
    guard = pm.get_plugin("nan_guard")
    assert guard.skipped_steps == [2, 3]
    ckpt = load_checkpoint(out / "checkpoints" / "step-00000003.pt")
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert "nan_guard: 2 steps had a non-finite loss" in caplog.text


def test_nan_guard_drops_gradients_so_the_optimizer_skips():
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    guard = NaNGuardPlugin({"max_skips": 3})
    trainer = RecordingTrainer(model, opt)
    x = torch.randint(0, 64, (2, 8))
    loss = model(x, x)[1] * math.nan
    guard.on_backward_begin(loss=loss)
    loss.backward()
    guard.on_backward_end(model=model, step=1)
    opt.step()
    guard.on_step_end(step=1, trainer=trainer)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert trainer.metrics["nan_guard/skipped"] == 1 and not trainer.should_stop
    assert NaNGuardPlugin({}).state_dict() == {"skipped": 0, "skipped_steps": []}
    restored = NaNGuardPlugin({})
    restored.load_state_dict(guard.state_dict())
    assert restored.skipped == 1 and restored.skipped_steps == [1]


def test_csv_rows_survive_resume(tmp_path):
    _, out, _ = _train(
        tmp_path, "full", "plugin=[csv]", "trainer.checkpoint_every=6", "trainer.keep_last=5"
    )
    ckpt = out / "checkpoints" / "step-00000006.pt"
    _, out2, _ = _train(tmp_path, "resumed", "plugin=[csv]", f"ckpt_path={ckpt}")
    full, resumed = read_csv(out / "epochs.csv"), read_csv(out2 / "epochs.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in full]
