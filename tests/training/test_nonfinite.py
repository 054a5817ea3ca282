"""A non-finite loss stops the run by default (trainer.on_nonfinite=stop|skip|ignore)."""

from __future__ import annotations

import math

import pytest
import torch

from apt.app import check_config, main, new_plugin_manager, run
from apt.core.errors import ConfigProblems
from apt.plugins import Plugin
from apt.training.checkpoint import load_checkpoint
from apt.training.nonfinite import NonFiniteLoss
from tests.helpers import Boom

COMMON = ("trainer.threads=1", "trainer.max_steps=8", "trainer.log_every=2", "trainer.eval_every=4",
          "trainer.checkpoint_every=1", "trainer.keep_last=20")


class Blowup(Plugin):
    """Weights x 1e20 after the optimizer step of ``at``: finite, but every later loss is not."""

    def get_name(self):
        return "blowup"

    def on_optimizer_step(self, step=None, model=None, **kw):
        if step == self.config["at"]:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1e20)


def _run(cfg_factory, tmp_path, *overrides, name="run"):
    pm = new_plugin_manager(strict=True)
    pm.register_plugin("boom", Boom)
    pm.register_plugin("blowup", Blowup)
    out = tmp_path / name
    out.mkdir()
    return run(cfg_factory(*COMMON, *overrides), out_dir=out, plugin_manager=pm), out, pm


def test_the_default_stops_at_the_first_non_finite_loss(cfg_factory, tmp_path):
    with pytest.raises(NonFiniteLoss) as info:
        _run(cfg_factory, tmp_path, "+plugin.boom={steps: [3]}")
    out = tmp_path / "run"
    (line,) = str(info.value).splitlines()
    assert "step 3" in line and str(out / "checkpoints" / "step-00000002.pt") in line
    assert info.value.step == 3
    names = sorted(p.name for p in (out / "checkpoints").glob("step-*.pt"))
    assert names == ["step-00000001.pt", "step-00000002.pt"]  # nothing saved after the NaN
    assert not (out / "summary.json").exists()


def test_main_prints_one_error_line_and_exits_non_zero(cfg_factory, capsys):
    cfg = cfg_factory(*COMMON, "+plugin.boom={steps: [1]}", "+plugin.boom._target_=tests.helpers.Boom")
    with pytest.raises(SystemExit) as info:
        main(cfg)
    assert info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: non-finite loss at step 1") and "no checkpoint" in err[0]


def test_skip_drops_the_step_and_goes_on(cfg_factory, tmp_path):
    val, out, _ = _run(cfg_factory, tmp_path, "+plugin.boom={steps: [3, 5]}", "trainer.on_nonfinite=skip")
    assert math.isfinite(val)
    two, three = (load_checkpoint(out / "checkpoints" / f"step-{s:08d}.pt")["model"] for s in (2, 3))
    assert all(torch.equal(two[k], three[k]) for k in two)  # step 3 changed nothing
    summary = (out / "metrics.csv").read_text()
    assert "nonfinite/skipped" in summary.splitlines()[0]


def test_ignore_keeps_training_on_nan(cfg_factory, tmp_path):
    val, _, _ = _run(cfg_factory, tmp_path, "+plugin.boom={steps: [3]}", "trainer.on_nonfinite=ignore")
    assert math.isnan(val)


def test_the_policy_is_checked_with_the_config():
    with pytest.raises(ConfigProblems, match=r"trainer.on_nonfinite='halt' is not one of \['stop', 'skip', 'ignore'\]"):
        check_config(["model=tiny", "data=synthetic", "trainer=debug", "trainer.on_nonfinite=halt"])


def test_nan_guard_saves_the_weights_of_the_last_finite_loss(cfg_factory, tmp_path):
    """Weights blown up after step 3: steps 4 and 5 are skipped and the run stops; the saved
    weights are those step 3's finite loss was computed with (= the checkpoint of step 2)."""
    _, out, pm = _run(cfg_factory, tmp_path, "plugin=[nan_guard]", "plugin.nan_guard.max_skips=2",
                      "+plugin.blowup={at: 3}")
    assert pm.get_plugin("nan_guard").skipped_steps == [4, 5]
    saved = load_checkpoint(out / "checkpoints" / "step-00000005.pt")["model"]
    good = load_checkpoint(out / "checkpoints" / "step-00000002.pt")["model"]
    assert all(torch.equal(saved[k], good[k]) for k in good)
