"""TrainerView (issue 23): the typed trainer interface plugins receive instead of ``Any`` + ``hasattr``.

The real trainer has every member the Protocol lists, always, so the built-in plugins use them
without probing; importing the Protocol does not import torch.
"""

from __future__ import annotations

import subprocess
import sys
import typing

import torch

from apt.data.loader import BatchLoader
from apt.plugins import TrainerView
from apt.plugins.builtin.early_stopping import EarlyStoppingPlugin
from apt.training.trainer import Trainer

from .builtin._helpers import tiny_model


def _trainer(**kwargs) -> Trainer:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = BatchLoader(torch.arange(200).numpy(), batch_size=2, block_size=4)
    return Trainer(model, opt, loader, loader, config={"max_steps": 2, "progress": False}, **kwargs)


def test_the_real_trainer_is_a_trainer_view_with_or_without_a_run_directory(tmp_path):
    members = {"should_stop", "metrics", "out_dir", "device", "dist", "checkpoints", "metrics_logger",
               "autocast_dtype", "step", "epoch", "interrupted_by", "add_loss", "log_metric",
               "add_param_group", "request_stop", "fail", "skip_step", "save", "state_dict"}
    declared = set(TrainerView.__annotations__) | {n for n in vars(TrainerView) if not n.startswith("_")}
    assert declared == members
    for trainer in (_trainer(), _trainer(out_dir=tmp_path)):
        assert isinstance(trainer, TrainerView)
        for name in members:  # every member is there (None allowed only where the Protocol says so)
            value = getattr(trainer, name)
            assert value is not None or name in {"out_dir", "checkpoints", "autocast_dtype", "interrupted_by"}


def test_builtin_hooks_are_typed_with_the_view():
    hints = typing.get_type_hints(EarlyStoppingPlugin.on_validation_end)
    assert hints["trainer"] == TrainerView | None


def test_early_stopping_asks_the_trainer_to_stop_with_its_reason():
    trainer = _trainer()
    es = EarlyStoppingPlugin({"patience": 1, "min_delta": 0})
    es.on_validation_end(metrics={"val_loss": 1.0}, trainer=trainer)
    es.on_validation_end(metrics={"val_loss": 1.0}, trainer=trainer)
    assert trainer.should_stop and trainer.stop_reason.startswith("early_stopping: no improvement in val_loss")


def test_importing_the_view_does_not_import_torch():
    code = "import sys, apt.plugins.trainer_view as v; assert 'torch' not in sys.modules, 'torch'; print(v.TrainerView)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
