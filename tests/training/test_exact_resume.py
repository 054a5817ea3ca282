"""A run interrupted by SIGINT or SIGTERM at any step and resumed is the uninterrupted run.

The interruption is a real SIGTERM (or SIGINT) the process sends itself from a plugin at
the end of a chosen step (the trainer's handler records it and the loop stops at the step
boundary, as when the signal comes from outside); the run is then resumed in its own directory with
``trainer.resume=true``. metrics.csv must equal the uninterrupted run's except the
throughput column, and summary.json except times. The runs are tiny (a 2-layer model of
width 32 on synthetic tokens, one thread) so the chain of interruptions stays cheap.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from apt.app import new_plugin_manager, run
from apt.plugins import Plugin
from apt.training.schema import register_configs
from tests.helpers import CONF

TINY = ["model=tiny", "data=synthetic", "trainer=debug", "optim.warmup_steps=2"]

# moe from epoch 2 (step 5), align from epoch 3 (step 9), a temperature annealed by epoch and
# an align weight by step; early stopping ends the run at its 7th validation (step 15):
# validations at 3, 4, 6, 8, 9, 12 (both a periodic and an epoch-end one) and 15.
SCENARIO = [
    "trainer.threads=1", "data.num_tokens=3000", "plugin=[moe,align,early_stopping]", "schedule=moe_align",
    "+schedule.align_alpha={start: 0.1, end: 0.5, by: step}", "trainer.max_epochs=5", "trainer.max_steps=null",
    "trainer.steps_per_epoch=4", "trainer.log_every=3", "trainer.eval_every=3", "model.dropout=0.1",
    "plugin.early_stopping.patience=6", "plugin.early_stopping.min_delta=10.0", "trainer.keep_last=3",
]
THROUGHPUT = {"tokens_per_s"}
TIMES = {"train_time_s", "eval_time_s", "final_eval_time_s", "tokens_per_s", "wall_s"}


class SelfSignal(Plugin):
    """Sends this process SIGTERM at the end of each step in ``at`` (as `kill -TERM` would),
    SIGINT (Ctrl-C) at those in ``int_at``."""

    def get_name(self):
        return "self_signal"

    def on_step_end(self, step=None, **kwargs):
        if step in self.config.get("at", []):
            os.kill(os.getpid(), signal.SIGINT if step in self.config.get("int_at", []) else signal.SIGTERM)


def _run(tmp_path: Path, out: Path, *overrides: str, at=()) -> int:
    """Run in ``out``; returns the exit status (0, or 130/143 for a run paused by SIGINT/SIGTERM)."""
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("self_signal", SelfSignal)
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[*TINY, f"data.cache_dir={tmp_path / 'cache'}", *SCENARIO,
                                           f"+plugin.self_signal={{at: {list(at)}, int_at: {list(BY_SIGINT)}}}",
                                           *overrides])
    out.mkdir(parents=True, exist_ok=True)
    try:
        run(cfg, out_dir=out, plugin_manager=pm)
    except SystemExit as exc:
        return int(exc.code)
    return 0


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in THROUGHPUT} for r in csv.DictReader(fh)]


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    s["checkpoint"] = Path(s["checkpoint"]).name
    return {k: v for k, v in s.items() if k not in TIMES}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exact")
    assert _run(tmp, tmp / "full") == 0
    return tmp, _rows(tmp / "full"), _summary(tmp / "full")


def test_the_scenario_reaches_every_point(uninterrupted):
    _, rows, summary = uninterrupted
    assert summary["step"] == 15 and summary["stopped"].startswith("early_stopping: no improvement")
    by_step = {int(r["step"]): r for r in rows}
    assert sorted(by_step) == [3, 4, 6, 8, 9, 12, 15]
    assert not by_step[4]["loss/balance"] and by_step[6]["loss/balance"]  # moe from step 5
    assert not by_step[8]["loss/align"] and by_step[9]["loss/align"]  # align from step 9
    assert by_step[8]["moe/upcycle_loss_delta"] and by_step[8]["moe/load_entropy"]


# on both sides of each enable point (4|5: moe, 8|9: align), between evaluations and inside
# a metrics window (10, 14), one after another in the same run directory; SIGINT (Ctrl-C)
# at some of them, SIGTERM at the others
CHAIN = (4, 5, 8, 9, 10, 14)
BY_SIGINT = (5, 10)


def _paused(step: int) -> int:
    return 128 + (signal.SIGINT if step in BY_SIGINT else signal.SIGTERM)


def test_interrupted_and_resumed_chain_equals_uninterrupted(uninterrupted):
    tmp, rows, summary = uninterrupted
    out = tmp / "chain"
    assert _run(tmp, out, at=CHAIN) == _paused(CHAIN[0])
    for stop in CHAIN[1:]:
        assert _run(tmp, out, "trainer.resume=true", at=CHAIN) == _paused(stop), stop
        assert max(int(r["step"]) for r in _rows(out)) <= stop  # no row the uninterrupted run lacks
    assert _run(tmp, out, "trainer.resume=true", at=CHAIN) == 0
    resumed = _rows(out)
    assert [r["step"] for r in resumed] == [r["step"] for r in rows]
    for a, b in zip(rows, resumed, strict=True):
        assert a == b, {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert _summary(out) == summary


def test_an_interrupted_run_evaluates_nothing_extra(uninterrupted):
    """SIGTERM between evaluations: no validation at the stop step (early stopping must
    not count one), no metrics row, a checkpoint of that step."""
    tmp, rows, _ = uninterrupted
    out = tmp / "once"
    assert _run(tmp, out, at=(7,)) == 128 + signal.SIGTERM
    assert [r["step"] for r in _rows(out)] == ["3", "4", "6"]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*.pt"))[-1] == "step-00000007.pt"
    assert not (out / "summary.json").exists()


def test_a_stop_decided_in_the_step_a_signal_paused_ends_the_resumed_run(uninterrupted):
    """SIGTERM during step 15, whose validation makes early stopping stop: the pause is saved
    with the stop, and the resumed run ends at once with early stopping's reason."""
    tmp, rows, summary = uninterrupted
    out = tmp / "stop_and_pause"
    assert _run(tmp, out, at=(15,)) == 128 + signal.SIGTERM
    assert _run(tmp, out, "trainer.resume=true", at=(15,)) == 0
    assert _rows(out) == rows
    assert _summary(out) == summary


# -- resumed from a checkpoint written between a step and its epoch's end ------------------------
# A checkpoint every 4 steps is written by the step (after its row), before the epoch's end
# (its evaluation, on_epoch_end's values, the stop): kill -9 right after it, and the resume
# must still write the epoch's end as the uninterrupted run did. Early stopping ends this
# run at its 8th validation (3, 4, 6, 8, 9, 12, 15, 16): step 16, the last step of epoch 4.
AT_EPOCH_END = [*TINY, *SCENARIO, "plugin.early_stopping.patience=7", "trainer.checkpoint_every=4"]


class KeepCheckpoints(Plugin):
    """Copies each checkpoint as it is written to ``<run>/kept/save-<n>.pt`` (the final save
    of step 16 replaces the periodic one of the same step)."""

    def get_name(self):
        return "keep_checkpoints"

    def on_checkpoint_save(self, checkpoint_path=None, **kwargs):
        import shutil

        kept = Path(checkpoint_path).parents[1] / "kept"
        kept.mkdir(exist_ok=True)
        shutil.copy(checkpoint_path, kept / f"save-{len(list(kept.iterdir())) + 1}.pt")


def _run_kept(tmp_path: Path, out: Path, *overrides: str) -> int:
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("keep_checkpoints", KeepCheckpoints)
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[*AT_EPOCH_END, f"data.cache_dir={tmp_path / 'cache'}",
                                           "+plugin.keep_checkpoints={}", *overrides])
    out.mkdir(parents=True, exist_ok=True)
    run(cfg, out_dir=out, plugin_manager=pm)
    return 0


def _resumed_from(tmp: Path, kept: Path, name: str) -> Path:
    """A run directory holding only ``kept`` as its checkpoint, resumed to the end."""
    import shutil

    import torch

    out = tmp / name
    (out / "checkpoints").mkdir(parents=True)
    step = torch.load(kept, weights_only=True)["progress"]["step"]
    shutil.copy(kept, out / "checkpoints" / f"step-{step:08d}.pt")
    assert _run_kept(tmp, out, "trainer.resume=true") == 0
    return out


def _header(out: Path) -> list[str]:
    return (out / "metrics.csv").read_text(encoding="utf-8").splitlines()[0].split(",")


@pytest.fixture(scope="module")
def at_epoch_end(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("epoch_end")
    assert _run_kept(tmp, tmp / "full") == 0
    return tmp, tmp / "full"


def test_resumed_at_an_epochs_last_step_writes_that_epochs_end(at_epoch_end):
    """moe/temperature, the MoE layers' statistics and the column order of the epoch's row."""
    import torch

    tmp, full = at_epoch_end
    kept = full / "kept" / "save-2.pt"
    state = torch.load(kept, weights_only=True)
    assert state["progress"]["step"] == 8 and state["progress"]["epoch_open"]  # before epoch 2's end
    out = _resumed_from(tmp, kept, "from8")
    assert _header(out) == _header(full)
    by_step = {r["step"]: r for r in _rows(full)}
    assert by_step["8"]["moe/temperature"] and by_step["8"]["moe_load_max"]
    assert _rows(out) == _rows(full)
    assert _summary(out) == _summary(full)


def test_resumed_after_an_early_stop_ends_as_the_uninterrupted_run(at_epoch_end):
    """The stop reason is checkpoint state, and the stopped epoch still ends (moe/* of its row)."""
    tmp, full = at_epoch_end
    out = _resumed_from(tmp, full / "kept" / "save-4.pt", "from16")  # the periodic save of step 16
    summary = _summary(full)
    assert summary["step"] == 16 and summary["stopped"].startswith("early_stopping: no improvement")
    assert _header(out) == _header(full)
    assert _rows(out) == _rows(full)
    assert _summary(out) == summary


def test_training_time_and_throughput_count_every_session(at_epoch_end):
    """A checkpoint holds the training time so far, so a resumed run's tokens_per_s is over
    the whole run, not over the little time after the resume."""
    import torch

    tmp, full = at_epoch_end
    kept = full / "kept" / "save-3.pt"
    state = torch.load(kept, weights_only=True)
    saved = state["progress"]
    assert saved["train_time"] > 0 and state["eval_seconds"] > 0
    out = _resumed_from(tmp, kept, "from12")
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["train_time_s"] > saved["train_time"] and s["eval_time_s"] > state["eval_seconds"]
    assert s["tokens_per_s"] == pytest.approx(s["step"] * 8 * 32 / s["train_time_s"])


def test_a_resumed_metrics_window_measures_throughput_over_its_own_steps(monkeypatch):
    """The row after a resume: the window's tokens over its seconds before and after the kill
    (not the tokens since the resume over the seconds since the resume)."""
    import torch

    from apt.training import window as window_module
    from apt.training.distributed import DistContext

    now = [100.0]
    monkeypatch.setattr(window_module.time, "perf_counter", lambda: now[0])
    before = window_module.MetricsWindow()
    before.start_clock(0)
    before.add_step({"train_loss": torch.tensor(2.0)}, lr=0.1)
    now[0] = 102.0  # 2 s for 512 tokens, then the checkpoint and kill -9
    state = before.state_dict(DistContext(), 512)
    now[0] = 500.0  # the resumed process
    after = window_module.MetricsWindow()
    after.load_state_dict(state, torch.device("cpu"), 512)
    after.start_clock(512)
    after.add_step({"train_loss": torch.tensor(1.0)}, lr=0.1)
    now[0] = 501.0  # 1 s for 512 more
    row = after.row(step=2, epoch=1, val={}, tokens_seen=1024, dist=DistContext(), layer_stats={})
    assert row["train_loss"] == 1.5 and row["tokens_per_s"] == pytest.approx(1024 / 3)
