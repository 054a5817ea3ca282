"""Plugin base class: config handling, defaults, hook-method discovery."""

import pytest

from apt.core import APTConfig
from apt.plugins import HookManager, Plugin
from apt.plugins.base import overridden_hook_methods


class EarlyStoppingPlugin(Plugin):
    """Stops early.

    Details."""


def test_config_is_always_a_dict():
    from omegaconf import OmegaConf

    assert Plugin().config == {} and Plugin(None).config == {}
    assert Plugin(OmegaConf.create({"a": {"b": 1}})).config == {"a": {"b": 1}}
    assert Plugin(APTConfig(d_model=16)).config["d_model"] == 16
    with pytest.raises(TypeError, match="plugin config must be a mapping, got list"):
        Plugin([1, 2])


def test_defaults():
    p = EarlyStoppingPlugin({"x": 1})
    assert p.get_name() == "early_stopping" and p.get_version() == "0.0.0"
    assert p.get_description() == "Stops early."
    assert p.get_dependencies() == [] and p.get_conflicts() == [] and p.get_priority() == 0
    assert p.validate_config() is True and p.should_stop is False and p.is_enabled()
    p.disable()
    assert not p.is_enabled() and "disabled" in repr(p)
    assert p.state_dict() == {}
    p.load_state_dict({})
    with pytest.raises(ValueError, match="'early_stopping' keeps no state but got keys \\['n'\\]"):
        p.load_state_dict({"n": 1})
    for event in ("on_model_init", "on_epoch_begin", "on_checkpoint_load"):
        assert getattr(p, event)(epoch=1) is None


def test_subclass_skipping_super_init_still_works():
    class Bare(Plugin):
        def __init__(self, config=None):
            self.x = 1

        def on_step_end(self, **kw):
            return "ran"

    hm = HookManager(strict=True)
    b = Bare()
    assert b.is_enabled() and b.should_stop is False
    b.setup(None, hm)
    assert hm.trigger("on_step_end") == ["ran"]
    b.teardown()
    assert hm.trigger("on_step_end") == []


def test_overridden_hook_methods_include_aliases():
    class P(Plugin):
        def on_epoch_start(self, **kw): ...
        def on_step_end(self, **kw): ...
        def on_something_custom(self, **kw): ...

    class Q(P):
        def on_train_begin(self, **kw): ...

    assert overridden_hook_methods(Plugin) == []
    assert overridden_hook_methods(P) == [("on_step_end", "on_step_end"), ("on_epoch_start", "on_epoch_begin")]
    assert set(overridden_hook_methods(Q)) == {("on_step_end", "on_step_end"), ("on_train_begin", "on_train_begin"),
                                               ("on_epoch_start", "on_epoch_begin")}


def test_setup_registers_methods_with_plugin_priority_and_setup_twice_is_harmless():
    class P(Plugin):
        def get_priority(self):
            return 7

        def on_epoch_end(self, epoch=None, **kw):
            return epoch

    hm = HookManager(strict=True)
    p = P()
    p.setup(None, hm)
    p.setup(None, hm)
    (info,) = hm.list_hooks("on_epoch_end")
    assert info.priority == 7 and info.name == "p.on_epoch_end" and info.plugin == "p"
    assert hm.trigger("on_epoch_end", epoch=3) == [3]
