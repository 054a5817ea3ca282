"""The loop end to end on a tiny model: event order, stopping, losses, resume."""

from __future__ import annotations

import math

import pytest
import torch

from apt.app import new_plugin_manager, run
from apt.plugins import EVENTS, Plugin
from apt.training.trainer import Trainer


class Recorder(Plugin):
    """Records (event, epoch, step) for every standard event, plus per-step losses."""

    def __init__(self, config=None):
        super().__init__(config)
        self.events: list[tuple[str, int | None, int | None]] = []
        self.losses: dict[int, float] = {}
        self.stop_at = self.config.get("stop_at")
        self.extra_loss = self.config.get("extra_loss")

    def get_name(self):
        return "recorder"

    def setup(self, registry, hook_manager):
        super().setup(registry, hook_manager)
        for event in EVENTS:
            hook_manager.register(event, self._make(event), name=f"record:{event}")

    def _make(self, event):
        def hook(**kw):
            self.events.append((event, kw.get("epoch"), kw.get("step")))
            assert {"trainer", "model", "epoch", "step"} <= set(kw) or event == "on_model_init"
            if event == "on_step_end":
                self.losses[kw["step"]] = float(kw["loss"])
                if self.stop_at and kw["step"] >= self.stop_at:
                    self.should_stop = True
            if event == "on_batch_end" and self.extra_loss:
                kw["trainer"].add_loss("extra", kw["outputs"][1] * 0 + self.extra_loss)
        return hook


def _run(cfg, tmp_path, *, recorder_config=None, name="run"):
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("recorder", Recorder)
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    val = run(cfg, out_dir=out, plugin_manager=pm)
    return val, pm.get_plugin("recorder"), out


def _expected_order(epochs, steps_per_epoch, accum, eval_every, max_steps):
    ev = ["on_model_init", "on_train_begin"]
    step = 0
    for _epoch in range(1, epochs + 1):
        ev.append("on_epoch_begin")
        for _ in range(steps_per_epoch):
            if step >= max_steps:
                break
            step += 1
            ev.append("on_step_begin")
            for _ in range(accum):
                ev += ["on_batch_begin", "on_batch_end", "on_backward_begin"]
            ev += ["on_backward_end", "on_optimizer_step", "on_step_end"]
            if step % eval_every == 0:
                ev += ["on_validation_begin", "on_validation_end"]
        if step % eval_every != 0:
            ev += ["on_validation_begin", "on_validation_end"]
        ev.append("on_epoch_end")
    ev += ["on_checkpoint_save", "on_train_end"]
    return ev


def test_event_order_matches_documented_loop(cfg_factory, tmp_path):
    cfg = cfg_factory("+plugin.recorder={}", "trainer.max_steps=null", "trainer.max_epochs=2",
                      "trainer.steps_per_epoch=3", "trainer.grad_accum=2", "trainer.eval_every=2")
    _, rec, _ = _run(cfg, tmp_path)
    names = [e for e, _, _ in rec.events]
    assert names == _expected_order(2, 3, 2, 2, 10**9)
    assert set(names) == set(EVENTS) - {"on_checkpoint_load"}
    # epochs count from 1; step in a step's events is the step being run, from 1
    begins = [(ep, st) for e, ep, st in rec.events if e == "on_step_begin"]
    assert begins == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    assert [ep for e, ep, _ in rec.events if e == "on_epoch_end"] == [1, 2]


def test_eval_every_null_evaluates_only_at_the_end(cfg_factory, tmp_path):
    cfg = cfg_factory("+plugin.recorder={}", "trainer.max_steps=5", "trainer.eval_every=null",
                      "trainer.eval_on_epoch_end=false", "trainer.log_every=1")
    _, rec, out = _run(cfg, tmp_path)
    assert [st for e, _, st in rec.events if e == "on_validation_begin"] == [5]
    rows = (out / "metrics.csv").read_text().splitlines()
    val = rows[0].split(",").index("val_loss")
    assert [r.split(",")[val] != "" for r in rows[1:]] == [False] * 4 + [True]


def test_checkpoint_load_event_fires_on_resume(cfg_factory, tmp_path):
    cfg = cfg_factory("+plugin.recorder={}", "trainer.max_steps=4", "trainer.checkpoint_every=2")
    _, _, out = _run(cfg, tmp_path, name="a")
    ckpt = out / "checkpoints" / "step-00000002.pt"
    cfg2 = cfg_factory("+plugin.recorder={}", "trainer.max_steps=4", f"ckpt_path={ckpt}")
    _, rec, _ = _run(cfg2, tmp_path, name="b")
    names = [e for e, _, _ in rec.events]
    assert names[:3] == ["on_model_init", "on_checkpoint_load", "on_train_begin"]
    assert "on_epoch_begin" not in names  # resumed inside epoch 1
    assert sorted(rec.losses) == [3, 4]


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_equals_uninterrupted(cfg_factory, tmp_path, accum):
    common = ("+plugin.recorder={}", "trainer.max_steps=12", "trainer.steps_per_epoch=5",
              f"trainer.grad_accum={accum}", "trainer.checkpoint_every=7", "trainer.keep_last=5",
              "model.dropout=0.1", "trainer.eval_every=4")
    _, full, out = _run(cfg_factory(*common), tmp_path, name="full")
    ckpt = out / "checkpoints" / "step-00000007.pt"
    _, resumed, _ = _run(cfg_factory(*common, f"ckpt_path={ckpt}"), tmp_path, name="resumed")
    assert sorted(resumed.losses) == list(range(8, 13))
    for step in range(8, 13):
        assert resumed.losses[step] == full.losses[step], step  # exact, not approximate


def test_auto_resume_uses_newest_and_falls_back_over_corrupt(cfg_factory, tmp_path):
    ckdir = tmp_path / "ck"
    common = ("+plugin.recorder={}", "trainer.max_steps=6", "trainer.checkpoint_every=2",
              "trainer.keep_last=3", f"trainer.checkpoint_dir={ckdir}")
    _, full, _ = _run(cfg_factory(*common), tmp_path, name="full")
    (ckdir / "step-00000006.pt").unlink()
    (ckdir / "step-00000004.pt").write_bytes(b"truncated")
    _, resumed, _ = _run(cfg_factory(*common, "trainer.resume=true"), tmp_path, name="again")
    assert sorted(resumed.losses) == [3, 4, 5, 6]  # fell back to step 2
    assert all(resumed.losses[s] == full.losses[s] for s in (3, 4, 5, 6))


def test_plugin_should_stop_ends_run_cleanly(cfg_factory, tmp_path):
    cfg = cfg_factory("+plugin.recorder={stop_at: 3}", "trainer.max_steps=50")
    _, rec, out = _run(cfg, tmp_path)
    assert max(rec.losses) == 3
    assert (out / "checkpoints" / "step-00000003.pt").is_file()
    assert [e for e, _, _ in rec.events][-1] == "on_train_end"


def test_add_loss_is_added_before_backward(cfg_factory, tmp_path):
    base = ("+plugin.recorder={}", "trainer.max_steps=2")
    _, plain, _ = _run(cfg_factory(*base), tmp_path, name="plain")
    _, extra, _ = _run(cfg_factory("+plugin.recorder={extra_loss: 5.0}", "trainer.max_steps=2"),
                       tmp_path, name="extra")
    assert extra.losses[1] == pytest.approx(plain.losses[1] + 5.0, abs=1e-5)
    rows = (tmp_path / "extra" / "metrics.csv").read_text().splitlines()
    assert "loss/extra" in rows[0]


def test_training_reduces_loss_and_writes_outputs(cfg_factory, tmp_path):
    cfg = cfg_factory("data.task=cycle", "trainer.max_steps=40", "trainer.eval_every=20",
                      "optim.optimizer.lr=3e-3", "trainer.plot=true")
    out = tmp_path / "o"
    val = run(cfg, out_dir=out)
    assert val < 0.5 * math.log(16)
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["step", "epoch", "train_loss", "val_loss", "val_loss_se", "val_tokens", "lr",
                          "tokens_per_s"]
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "checkpoints" / "step-00000040.pt").is_file()


def test_add_param_group_follows_lr_schedule(cfg_factory):
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    from apt.data.loader import BatchLoader
    from apt.training.lr import WarmupCosine

    loader = BatchLoader(torch.arange(200).numpy(), batch_size=2, block_size=4)
    tr = Trainer(model, opt, loader, loader, config={"max_steps": 10, "progress": False})
    tr.lr_schedule = WarmupCosine(opt, warmup_steps=0, total_steps=10, decay="linear", min_lr_ratio=0.0)
    tr.step = 5
    extra = torch.nn.Linear(4, 2)
    tr.add_param_group(extra.parameters())
    assert len(opt.param_groups) == 3  # original + matrix + bias groups
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5)
    assert opt.param_groups[2]["weight_decay"] == 0.0
    tr.lr_schedule.apply(8)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.2, 0.2])


def test_gradient_clipping_is_left_to_plugins_that_declare_it(cfg_factory, tmp_path, monkeypatch):
    """The trainer asks for the clips_gradients capability, not for a plugin's name."""
    from apt.plugins import CLIPS_GRADIENTS

    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(1) or real(*a, **k))

    class Clipper(Plugin):
        capabilities = frozenset({CLIPS_GRADIENTS})

        def get_name(self):
            return "my_clipper"

    class NamedLikeIt(Plugin):  # the built-in's name, but it clips nothing and declares nothing
        def get_name(self):
            return "gradient_clipping"

    for name, cls, expected in (("my_clipper", Clipper, 0), ("gradient_clipping", NamedLikeIt, 3)):
        pm = new_plugin_manager(strict=True)
        pm.register_plugin(name, cls, override=True)
        calls.clear()
        out = tmp_path / name
        out.mkdir()
        run(cfg_factory(f"+plugin.{name}={{}}", "trainer.max_steps=3", "trainer.threads=1"), out_dir=out,
            plugin_manager=pm)
        assert len(calls) == expected, name


def test_every_evaluation_has_its_metrics_row(cfg_factory, tmp_path):
    """An evaluation off the log_every grid still gets a row: no val loss goes unrecorded."""
    import csv

    cfg = cfg_factory("trainer.max_steps=6", "trainer.eval_every=3", "trainer.log_every=2")
    out = tmp_path / "o"
    run(cfg, out_dir=out)
    with (out / "metrics.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [3, 6]
    assert all(r["train_loss"] for r in rows)  # each row closes its own window of steps


class MetricsWatcher(Plugin):
    """Records the keys of every ``on_validation_end`` metrics."""

    seen: list[set[str]] = []

    def get_name(self):
        return "metrics_watcher"

    def on_validation_end(self, metrics=None, **kwargs):
        MetricsWatcher.seen.append(set(metrics or {}))


def test_validation_metrics_are_the_names_a_monitor_option_may_take(cfg_factory, tmp_path):
    """The config check refuses a ``monitor`` outside VALIDATION_METRICS; each is produced."""
    from apt.training.evaluation import VALIDATION_METRICS

    MetricsWatcher.seen = []
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("metrics_watcher", MetricsWatcher)
    run(cfg_factory("+plugin.metrics_watcher={}", "trainer.max_steps=2", "trainer.eval_every=1"),
        out_dir=tmp_path / "run", plugin_manager=pm)
    assert len(MetricsWatcher.seen) >= 2
    assert all(set(VALIDATION_METRICS) <= keys for keys in MetricsWatcher.seen)
