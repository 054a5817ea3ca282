"""The built-in plugins (the guide's three examples), through a PluginManager."""

from types import SimpleNamespace

import pytest

from apt.core import Registry
from apt.plugins import HookManager, PluginConfigError, PluginManager
from apt.plugins.builtin import BUILTIN_PLUGINS


@pytest.fixture
def pm():
    return PluginManager(registry=Registry(), hook_manager=HookManager(strict=True), entry_points=False)


def test_catalog_entries_import(pm):
    for name in ("logging", "early_stopping", "gradient_clipping"):
        assert name in BUILTIN_PLUGINS
    for name in BUILTIN_PLUGINS:
        assert pm.get_plugin_class(name)  # every catalog path imports


def test_logging_plugin_writes_epoch_lines_and_closes(pm, tmp_path):
    path = tmp_path / "logs" / "train.log"
    plugin = pm.load_plugin("logging", {"log_file": str(path)})
    pm.setup_all()
    pm.trigger_event("on_epoch_end", epoch=1, metrics={"loss": 2.5})
    pm.trigger_event("on_epoch_end", epoch=2, metrics=None)
    pm.trigger_event("on_train_end", metrics={"loss": 1.0})
    assert path.read_text() == "Epoch 1: {'loss': 2.5}\nTraining finished: {'loss': 1.0}\n"
    handle = plugin.file_handle
    pm.teardown_all()
    assert handle.closed and plugin.file_handle is None


def test_logging_plugin_config_errors(pm):
    with pytest.raises(PluginConfigError, match="option mode='x' must be one of 'w', 'a'"):
        pm.load_plugin("logging", {"mode": "x"})


def test_early_stopping_counts_patience_and_stops_trainer(pm):
    es = pm.load_plugin("early_stopping", {"patience": 2, "min_delta": 0.1})
    pm.setup_all()
    trainer = SimpleNamespace(should_stop=False)
    trainer.request_stop = lambda reason: setattr(trainer, "should_stop", True)  # TrainerView.request_stop
    for val in (1.0, 0.95, 0.85):  # 0.95 is within min_delta: no improvement
        pm.trigger_event("on_validation_end", metrics={"val_loss": val}, trainer=trainer)
    assert es.best_loss == 0.85 and es.wait == 0 and not es.should_stop
    pm.trigger_event("on_validation_end", metrics={"other": 0.0}, trainer=trainer)
    assert es.wait == 0  # metric missing: ignored
    pm.trigger_event("on_validation_end", metrics={"val_loss": 0.9}, trainer=trainer)
    assert es.wait == 1 and not trainer.should_stop
    pm.trigger_event("on_validation_end", metrics={"val_loss": 0.9}, trainer=trainer)
    assert es.should_stop and trainer.should_stop and pm.should_stop


def test_early_stopping_max_mode_and_state(pm):
    es = pm.load_plugin("early_stopping", {"patience": 1, "monitor": "acc", "mode": "max", "min_delta": 0})
    es.on_validation_end(metrics={"acc": 0.5})
    es.on_validation_end(metrics={"acc": 0.6})
    assert es.best_loss == 0.6 and es.wait == 0
    es.on_validation_end(metrics={"acc": 0.6})
    assert es.should_stop
    state = pm.state_dict()["early_stopping"]
    fresh = PluginManager(registry=Registry(), entry_points=False)
    other = fresh.load_plugin("early_stopping", {"patience": 1, "mode": "max"})
    fresh.load_state_dict({"early_stopping": state})
    assert (other.best_loss, other.wait, other.should_stop) == (0.6, 1, True)


@pytest.mark.parametrize("cfg, msg", [
    ({"patience": 0}, "patience must be a positive integer, got 0"),
    ({"min_delta": -1}, "min_delta must be a non-negative number, got -1"),
    ({"mode": "up"}, "option mode='up' must be one of 'min', 'max'"),
])
def test_early_stopping_config_errors(pm, cfg, msg):
    with pytest.raises(PluginConfigError, match=msg):
        pm.load_plugin("early_stopping", cfg)


def test_gradient_clipping_clips_the_global_norm(pm):
    import torch
    gc = pm.load_plugin("gradient_clipping", {"max_norm": 0.5})
    pm.setup_all()
    model = torch.nn.Linear(4, 3)
    (model(torch.ones(2, 4)) * 100).sum().backward()
    before = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    logged = {}
    trainer = SimpleNamespace(log_metric=lambda k, v: logged.__setitem__(k, v))
    pm.trigger_event("on_backward_end", model=model, trainer=trainer)
    after = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert before > 0.5 and after == pytest.approx(0.5, rel=1e-4)
    assert gc.last_norm == pytest.approx(before, rel=1e-4) and logged["grad_norm"] == gc.last_norm
    assert gc.num_clipped == 1 and pm.state_dict() == {"gradient_clipping": {"num_clipped": 1}}
    assert pm.trigger_event("on_backward_end") == [None]  # no model: nothing to do


def test_gradient_clipping_config_errors(pm):
    with pytest.raises(PluginConfigError, match="max_norm must be a positive number, got 0"):
        pm.load_plugin("gradient_clipping", {"max_norm": 0})
    with pytest.raises(PluginConfigError, match="norm_type"):
        pm.load_plugin("gradient_clipping", {"norm_type": -2})
    assert pm.load_plugin("gradient_clipping", {"norm_type": "inf"}).norm_type == "inf"
