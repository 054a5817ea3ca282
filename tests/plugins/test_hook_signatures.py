"""Hooks are checked at registration (issue 23): a hook parameter its event never passes is an error.

Before, every hook took ``**kwargs`` with ``=None`` defaults, so a typo (``stpe=None``) got None
forever. Now :meth:`HookManager.register` checks each hook's parameter names against
:data:`EVENT_PARAMS` (the one declaration the trainer fires from too), a plugin's overridden
``on_*`` methods at setup included, and ``apt check``/train.py report it as one ``error:`` line.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apt.plugins import (
    CONTEXT_PARAMS,
    EVENT_ALIASES,
    EVENT_EXTRAS,
    EVENT_PARAMS,
    EVENTS,
    HookManager,
    HookSignatureError,
    Plugin,
    PluginError,
    PluginManager,
)
from apt.plugins.base import overridden_hook_methods
from apt.plugins.builtin import BUILTIN_PLUGINS
from apt.plugins.hooks import hook_parameters

REPO = Path(__file__).resolve().parents[2]
STEP_END = "trainer, model, optimizer, schedule, epoch, step, loss"


@pytest.fixture
def hm(monkeypatch):
    monkeypatch.delenv("APT_STRICT_HOOKS", raising=False)
    return HookManager()


def isolated() -> PluginManager:
    from apt.core import Registry

    return PluginManager(registry=Registry(), hook_manager=HookManager(strict=True), entry_points=False)


class Typo(Plugin):
    def get_name(self):
        return "typo"

    def on_step_end(self, stpe=None, **kwargs):
        self.seen = stpe


def test_the_declaration_is_context_plus_each_events_own_keywords():
    assert CONTEXT_PARAMS == ("trainer", "model", "optimizer", "schedule", "epoch", "step")
    assert EVENTS == tuple(EVENT_EXTRAS) and len(EVENTS) == 16
    assert EVENT_PARAMS["on_step_end"] == (*CONTEXT_PARAMS, "loss")
    assert EVENT_PARAMS["on_checkpoint_load"] == (*CONTEXT_PARAMS, "checkpoint_path", "checkpoint")
    assert EVENT_PARAMS["on_validation_begin"] == CONTEXT_PARAMS


def test_a_typod_plugin_hook_fails_at_setup_naming_plugin_hook_name_and_parameters():
    pm = isolated()
    pm.register_plugin("typo", Typo)
    pm.load_plugin("typo")
    with pytest.raises(PluginError) as info:
        pm.setup_all()
    msg = str(info.value)
    assert msg.startswith("setup of plugin 'typo' failed: hook 'typo.on_step_end' of plugin 'typo' on event "
                          "'on_step_end' takes parameter 'stpe', which that event never passes "
                          "(did you mean 'step'?)"), msg
    assert f"on_step_end passes: {STEP_END}" in msg
    assert isinstance(info.value.__cause__, HookSignatureError)
    assert pm.hook_manager.list_hooks() == []  # nothing of the failed plugin stays registered


def test_explicit_registration_is_checked_too(hm):
    def on_epoch(epok, **kwargs):
        pass

    with pytest.raises(HookSignatureError, match=r"hook 'x' on event 'on_epoch_begin' \(registered as "
                                                 r"'on_epoch_start'\) takes parameter 'epok'.*did you mean 'epoch'"):
        hm.register("on_epoch_start", on_epoch, name="x")
    with pytest.raises(HookSignatureError, match="takes parameter 'metric', which that event never passes"):
        hm.register("on_validation_end", lambda metric=None, **kw: None)
    with pytest.raises(HookSignatureError, match="positional-only parameter.*'epoch'"):
        hm.register("on_epoch_end", lambda epoch, /, **kw: None)
    assert hm.events() == []


def test_plugin_setup_registering_a_typod_function_names_the_plugin():
    def hook(stp, **kwargs):
        pass

    class Explicit(Plugin):
        def get_name(self):
            return "explicit"

        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)
            hook_manager.register("on_step_begin", hook, priority=10)

    pm = isolated()
    pm.register_plugin("explicit", Explicit)
    pm.load_plugin("explicit")
    with pytest.raises(PluginError, match="hook 'test_plugin_setup_registering_a_typod_function_names_the_plugin"
                                          r"\.<locals>\.hook' of plugin 'explicit' on event 'on_step_begin' "
                                          "takes parameter 'stp'.*on_step_begin passes: trainer, model, "
                                          "optimizer, schedule, epoch, step, batch"):
        pm.setup_all()


def test_what_stays_allowed(hm):
    """``**kwargs``, positional-or-keyword names the event passes (the guide's ``epoch``),
    builtins and custom events, whose parameters nobody declares."""
    hm.register("on_epoch_start", lambda epoch, **kwargs: epoch)
    hm.register("on_step_end", lambda step, loss=None, **kwargs: (step, loss))
    hm.register("on_step_end", lambda *args, **kwargs: None)
    hm.register("on_step_end", print)
    hm.register("on_moe_upcycled", lambda n=0: n)
    assert hm.trigger("on_epoch_begin", epoch=3) == [3]


def test_a_hook_without_kwargs_gets_only_the_keywords_it_names(hm):
    """As pluggy does: the event passes the whole context, the hook takes what it needs."""
    hm.register("on_step_end", lambda step, loss: (step, loss))
    hm.register("on_validation_begin", lambda: "no parameters")
    context = dict.fromkeys(CONTEXT_PARAMS, object())
    assert hm.trigger("on_step_end", **{**context, "step": 4, "loss": 0.5}) == [(4, 0.5)]
    assert hm.trigger("on_validation_begin", **context) == ["no parameters"]


@pytest.mark.parametrize("name", sorted(BUILTIN_PLUGINS))
def test_every_builtin_plugin_hook_takes_only_parameters_its_event_passes(name):
    from apt.plugins import plugin_manager

    cls = plugin_manager.get_plugin_class(name)
    hooks = overridden_hook_methods(cls)
    assert hooks, f"{name} overrides no hook"
    for attr, event in hooks:
        names, _, positional_only = hook_parameters(getattr(cls, attr).__get__(object.__new__(cls)))
        assert set(names) <= set(EVENT_PARAMS[event]) and not positional_only, (name, attr, names)


def test_example_plugin_and_base_hooks_register(hm):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import example_plugin
    finally:
        sys.path.remove(str(REPO / "examples"))
    plugins = [obj for obj in vars(example_plugin).values()
               if isinstance(obj, type) and issubclass(obj, Plugin) and obj is not Plugin]
    assert plugins
    for cls in plugins:
        for attr, event in overridden_hook_methods(cls):
            names, _, _ = hook_parameters(getattr(cls, attr).__get__(object.__new__(cls)))
            assert set(names) <= set(EVENT_PARAMS[event]), (cls, attr, names)
    for attr in (*EVENTS, *EVENT_ALIASES):  # the base class's no-ops take **kwargs only
        if hasattr(Plugin, attr):
            assert list(inspect.signature(getattr(Plugin, attr)).parameters) == ["self", "kwargs"]


TYPO_MODULE = '''
from apt.plugins import Plugin


class Typo(Plugin):
    def get_name(self):
        return "typo"

    def on_step_end(self, stpe=None, **kwargs):
        pass
'''


def test_apt_check_and_train_py_report_a_typod_hook_as_one_error_line(tmp_path, monkeypatch, capsys):
    from apt.cli import main as apt_main

    (tmp_path / "typoplugin.py").write_text(textwrap.dedent(TYPO_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    args = ["model=tiny", "data=synthetic", "trainer=debug", "+plugin.typo={_target_: typoplugin.Typo}",
            f"hydra.run.dir={run_dir}"]
    assert apt_main(["check", *args]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert "hook 'typo.on_step_end' of plugin 'typo' on event 'on_step_end' takes parameter 'stpe'" in lines[0]
    assert f"on_step_end passes: {STEP_END}" in lines[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr == err, r.stderr
    assert not run_dir.exists()


class Recorder(Plugin):
    """Records the keywords each standard event passes in a real run (every hook takes **kwargs)."""

    def get_name(self):
        return "recorder"

    def setup(self, registry, hook_manager):
        super().setup(registry, hook_manager)
        self.seen: dict[str, set[str]] = {}
        for event in EVENTS:
            hook_manager.register(event, functools.partial(self._saw, event), name=f"recorder.{event}")

    def _saw(self, event, **kwargs):
        self.seen.setdefault(event, set()).update(kwargs)
        self.trainer = kwargs.get("trainer", getattr(self, "trainer", None))


def test_the_trainer_fires_every_event_with_exactly_its_declared_keywords(tmp_path):
    from hydra import compose, initialize_config_dir

    from apt.app import new_plugin_manager, run
    from apt.training.schema import register_configs

    register_configs()

    def train(*overrides):
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
            cfg = compose("config", overrides=[
                f"data.cache_dir={tmp_path / 'cache'}", "model=tiny", "data=synthetic", "trainer=debug",
                "optim.warmup_steps=1", "trainer.max_steps=null", "trainer.steps_per_epoch=2",
                "trainer.eval_every=2", "trainer.checkpoint_every=2", "+plugin.recorder={}", *overrides])
        pm = new_plugin_manager(strict=True)
        pm.register_plugin("recorder", Recorder)
        run(cfg, out_dir=out, plugin_manager=pm)
        return pm.get_plugin("recorder")

    out = tmp_path / "run"
    out.mkdir()
    rec = train("trainer.max_epochs=1")
    assert set(rec.seen) == set(EVENTS) - {"on_checkpoint_load"}  # a fresh run loads nothing
    resumed = train("trainer.max_epochs=2", "trainer.resume=true")
    assert set(resumed.seen) == set(EVENTS)
    for event in EVENTS:
        assert resumed.seen[event] == set(EVENT_PARAMS[event]), event
        assert rec.seen.get(event, set(EVENT_PARAMS[event])) == set(EVENT_PARAMS[event]), event
    trainer = rec.trainer
    with pytest.raises(ValueError, match=r"fires 'on_step_end' with \['stpe'\]; EVENT_EXTRAS declares \['loss'\]"):
        trainer.fire("on_step_end", stpe=1)
    with pytest.raises(ValueError, match="fires 'on_step_end' with \\[\\]"):
        trainer.fire("on_step_end")
