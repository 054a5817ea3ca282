"""PluginManager: loading, errors at load time, dependencies, lifecycle, state, config forms."""

import logging

import pytest

from apt.core import APTConfig, Registry
from apt.plugins import (
    HookManager,
    Plugin,
    PluginConfigError,
    PluginConflictError,
    PluginDependencyError,
    PluginError,
    PluginManager,
    PluginNameError,
    PluginNotFoundError,
)
from tests.helpers import assert_runs


@pytest.fixture
def pm():
    return PluginManager(registry=Registry(), hook_manager=HookManager(strict=True), entry_points=False)


def make_plugin(name, *, deps=(), conflicts=(), priority=0, log=None, valid=True, base=Plugin):
    """A plugin class called ``name`` that records its setup/teardown/step events in ``log``."""
    log = log if log is not None else []

    class _P(base):
        def get_name(self):
            return name

        def get_dependencies(self):
            return list(deps)

        def get_conflicts(self):
            return list(conflicts)

        def get_priority(self):
            return priority

        def validate_config(self):
            return valid

        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)
            log.append(f"setup {name}")

        def teardown(self):
            log.append(f"teardown {name}")
            super().teardown()

        def on_step_end(self, step=None, **kwargs):
            log.append(f"{name} step {step}")
            return name

    _P.__qualname__ = f"{name.title()}Plugin"
    return _P


def test_register_load_setup_trigger(pm):
    log = []
    pm.register_plugin("a", make_plugin("a", log=log))
    plugin = pm.load_plugin("a", None)
    assert plugin.config == {} and pm.get_plugin("a") is plugin and pm.list_plugins() == ["a"]
    assert pm.setup_all() == ["a"]
    assert pm.trigger_event("on_step_end", step=2) == ["a"]
    assert log == ["setup a", "a step 2"]
    assert pm.get_plugin("missing") is None and "a" in pm


def test_config_is_a_copy_as_dict(pm):
    pm.register_plugin("a", make_plugin("a"))
    cfg = {"x": 1}
    plugin = pm.load_plugin("a", cfg)
    cfg["x"] = 2
    assert plugin.config == {"x": 1}


def test_unknown_plugin_lists_available(pm):
    pm.register_plugin("alpha", make_plugin("alpha"))
    with pytest.raises(PluginNotFoundError) as err:
        pm.load_plugin("alpah")
    msg = str(err.value)
    assert "'alpah'" in msg and "did you mean 'alpha'" in msg
    assert "'early_stopping'" in msg and "'logging'" in msg and "'gradient_clipping'" in msg


def test_name_mismatch_is_an_error_at_load(pm):
    pm.register_plugin("wrong", make_plugin("right"))
    with pytest.raises(PluginNameError, match="'wrong'.*'right'"):
        pm.load_plugin("wrong")
    assert pm.list_plugins() == []


def test_plugin_without_get_name_takes_its_registered_name(pm):
    class Anonymous(Plugin):
        pass

    pm.register_plugin("anon", Anonymous)
    assert pm.load_plugin("anon").get_name() == "anon"
    assert Anonymous().get_name() == "anonymous"


def test_validate_config_false_or_raising_is_an_error(pm):
    pm.register_plugin("a", make_plugin("a", valid=False))
    with pytest.raises(PluginConfigError, match="'a'.*validate_config returned False"):
        pm.load_plugin("a", {"k": 1})

    class Strict(Plugin):
        def get_name(self):
            return "strict"

        def validate_config(self, config=None):
            raise ValueError(f"rate must be positive, got {self.config['rate']}")

    pm.register_plugin("strict", Strict)
    with pytest.raises(PluginConfigError, match="rate must be positive, got -1"):
        pm.load_plugin("strict", {"rate": -1})
    assert pm.list_plugins() == []


def test_constructor_failure_is_a_config_error(pm):
    class NeedsKey(Plugin):
        def __init__(self, config=None):
            super().__init__(config)
            self.size = config["size"]

    pm.register_plugin("needs_key", NeedsKey)
    with pytest.raises(PluginConfigError, match="'needs_key'.*size"):
        pm.load_plugin("needs_key", {})


def test_package_requirements_checked_at_load(pm):
    pm.register_plugin("ok", make_plugin("ok", deps=["pytest>=1.0", "packaging"]))
    pm.load_plugin("ok")
    pm.register_plugin("new", make_plugin("new", deps=["pytest>=999"]))
    with pytest.raises(PluginDependencyError, match=r"'new'.*pytest>=999.*pytest \d"):
        pm.load_plugin("new")
    pm.register_plugin("gone", make_plugin("gone", deps=["surely-not-installed-pkg>=1"]))
    with pytest.raises(PluginDependencyError, match="'surely-not-installed-pkg' is not installed"):
        pm.load_plugin("gone")
    pm.register_plugin("bad", make_plugin("bad", deps=["not a requirement!!"]))
    with pytest.raises(PluginDependencyError, match="invalid requirement"):
        pm.load_plugin("bad")


def test_missing_plugin_dependency_is_an_error_at_setup_all(pm):
    pm.register_plugin("b", make_plugin("b", deps=["plugin:a"]))
    pm.load_plugin("b")  # a may still be loaded later
    with pytest.raises(PluginDependencyError) as err:
        pm.setup_all()
    assert "'b'" in str(err.value) and "'a'" in str(err.value) and "not loaded" in str(err.value)


def test_setup_order_is_topological_with_priority_breaking_ties(pm):
    log = []
    pm.register_plugin("low", make_plugin("low", priority=0, log=log))
    pm.register_plugin("high", make_plugin("high", priority=10, log=log))
    pm.register_plugin("child", make_plugin("child", deps=["plugin:low"], priority=99, log=log))
    pm.register_plugin("grandchild", make_plugin("grandchild", deps=["plugin:child", "plugin:high"], log=log))
    for name in ("grandchild", "child", "low", "high"):
        pm.load_plugin(name)
    assert pm.setup_all() == ["high", "low", "child", "grandchild"]
    assert log == ["setup high", "setup low", "setup child", "setup grandchild"]
    # child has priority 99, so its auto-registered hook runs first
    assert pm.trigger_event("on_step_end") == ["child", "high", "low", "grandchild"]


def test_dependency_cycle_named(pm):
    pm.register_plugin("a", make_plugin("a", deps=["plugin:b"]))
    pm.register_plugin("b", make_plugin("b", deps=["plugin:c"]))
    pm.register_plugin("c", make_plugin("c", deps=["plugin:a"]))
    for n in "abc":
        pm.load_plugin(n)
    with pytest.raises(PluginDependencyError, match="cycle: a -> b -> c -> a"):
        pm.setup_all()


@pytest.mark.parametrize("first_declares", [True, False])
def test_conflicts_either_direction(pm, first_declares):
    pm.register_plugin("flash", make_plugin("flash", conflicts=["slow"] if first_declares else []))
    pm.register_plugin("slow", make_plugin("slow", conflicts=[] if first_declares else ["plugin:flash"]))
    pm.load_plugin("flash")
    with pytest.raises(PluginConflictError, match="'slow' and 'flash'"):
        pm.load_plugin("slow")
    assert pm.list_plugins() == ["flash"]


def test_disabled_plugin_receives_no_hooks_including_plain_functions(pm):
    log = []

    class P(Plugin):
        def get_name(self):
            return "p"

        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)
            hook_manager.register("on_epoch_start", lambda epoch, **kw: log.append(f"fn {epoch}"))

        def on_epoch_begin(self, epoch, **kw):
            log.append(f"method {epoch}")

    pm.register_plugin("p", P)
    pm.load_plugin("p")
    pm.setup_all()
    pm.disable_plugin("p")
    assert pm.trigger_event("on_epoch_begin", epoch=1) == []
    pm.enable_plugin("p")
    pm.trigger_event("on_epoch_start", epoch=2)
    assert log == ["method 2", "fn 2"]
    with pytest.raises(PluginNotFoundError, match="'q' is not loaded"):
        pm.disable_plugin("q")


def test_teardown_and_unload_remove_hooks(pm):
    log = []
    pm.register_plugin("a", make_plugin("a", log=log))
    pm.register_plugin("b", make_plugin("b", log=log))
    pm.load_plugin("a")
    pm.load_plugin("b")
    pm.setup_all()
    pm.teardown_all()
    assert log[-2:] == ["teardown b", "teardown a"]
    assert pm.trigger_event("on_step_end") == [] and pm.hook_manager.list_hooks() == []
    assert pm.list_plugins() == ["a", "b"]
    pm.setup_all()
    pm.unload_plugin("a")
    assert pm.trigger_event("on_step_end") == ["b"] and pm.list_plugins() == ["b"]


def test_setup_all_is_incremental(pm):
    log = []
    pm.register_plugin("a", make_plugin("a", log=log))
    pm.register_plugin("b", make_plugin("b", deps=["plugin:a"], log=log))
    pm.load_plugin("a")
    assert pm.setup_all() == ["a"]
    pm.load_plugin("b")
    assert pm.setup_all() == ["b"]
    assert pm.setup_all() == []
    assert log == ["setup a", "setup b"]
    assert pm.trigger_event("on_step_end") == ["a", "b"]


def test_explicit_register_in_setup_updates_auto_registered_method(pm):
    class P(Plugin):
        def get_name(self):
            return "p"

        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)
            hook_manager.register("on_epoch_start", self.on_epoch_start, priority=10)

        def on_epoch_start(self, epoch, **kw):
            return "p"

    pm.register_plugin("p", P)
    pm.load_plugin("p")
    pm.hook_manager.register("on_epoch_begin", lambda **kw: "other", priority=5)
    pm.setup_all()
    assert pm.trigger_event("on_epoch_begin", epoch=1) == ["p", "other"]
    assert [h.priority for h in pm.hook_manager.list_hooks("on_epoch_start")] == [10, 5]


def test_plugin_skipping_super_setup_still_gets_its_methods_registered(pm):
    class Lazy(Plugin):
        def get_name(self):
            return "lazy"

        def setup(self, registry, hook_manager):
            pass

        def on_train_end(self, **kw):
            return "done"

    pm.register_plugin("lazy", Lazy)
    pm.load_plugin("lazy")
    pm.setup_all()
    assert pm.trigger_event("on_train_end") == ["done"]


def test_failing_setup_is_reported_and_leaves_no_hooks(pm):
    class Broken(Plugin):
        def get_name(self):
            return "broken"

        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)
            hook_manager.register("on_step_end", print)
            raise RuntimeError("no GPU")

    pm.register_plugin("broken", Broken)
    pm.load_plugin("broken")
    with pytest.raises(PluginError, match="setup of plugin 'broken' failed: no GPU"):
        pm.setup_all()
    assert pm.hook_manager.list_hooks() == [] and not pm.is_set_up("broken")


def test_registering_names(pm):
    a, b = make_plugin("a"), make_plugin("a")
    pm.register_plugin("a", a)
    pm.register_plugin("a", a)  # same class again: fine
    with pytest.raises(PluginError, match="already registered"):
        pm.register_plugin("a", b)
    pm.register_plugin("a", b, override=True)
    with pytest.raises(PluginError, match="built-in"):
        pm.register_plugin("logging", make_plugin("logging"))
    with pytest.raises(TypeError, match="subclass"):
        pm.register_plugin("x", object)
    pm.load_plugin("a")
    with pytest.raises(PluginError, match="already loaded"):
        pm.load_plugin("a")


def test_state_dict_round_trip(pm, caplog):
    class Counter(Plugin):
        def get_name(self):
            return "counter"

        def __init__(self, config=None):
            super().__init__(config)
            self.n = 0

        def on_step_end(self, **kw):
            self.n += 1

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    pm.register_plugin("counter", Counter)
    pm.load_plugin("counter")
    pm.setup_all()
    for _ in range(3):
        pm.trigger_event("on_step_end")
    state = pm.state_dict()
    assert state == {"counter": {"n": 3}}
    other = PluginManager(registry=Registry(), hook_manager=HookManager(), entry_points=False)
    other.register_plugin("counter", Counter)
    other.load_plugin("counter")
    with caplog.at_level(logging.WARNING):
        other.load_state_dict({**state, "ghost": {}})
    assert other.get_plugin("counter").n == 3
    assert "'ghost'" in caplog.text


def test_should_stop_property(pm):
    pm.register_plugin("a", make_plugin("a"))
    plugin = pm.load_plugin("a")
    assert plugin.should_stop is False and not pm.should_stop
    plugin.should_stop = True
    assert pm.should_stop
    plugin.disable()
    assert not pm.should_stop


CONFIG = {"plugins": ["a", "b"], "a": {"rate": 0.1}, "b": {"mode": "advanced"}, "d_model": 64}


@pytest.mark.parametrize("form", ["dict", "aptconfig", "omegaconf", "mapping"])
def test_load_from_config_forms(pm, form):
    from omegaconf import OmegaConf

    pm.register_plugin("a", make_plugin("a"))
    pm.register_plugin("b", make_plugin("b"))
    config = {
        "dict": CONFIG,
        "aptconfig": APTConfig.from_dict(CONFIG),
        "omegaconf": OmegaConf.create(CONFIG),
        "mapping": {"plugins": {"a": {"rate": 0.1}, "b": {"mode": "advanced"}}},
    }[form]
    loaded = pm.load_from_config(config)
    assert [p.get_name() for p in loaded] == ["a", "b"]
    assert pm.get_plugin("a").config == {"rate": 0.1}
    assert pm.get_plugin("b").config == {"mode": "advanced"}


def test_load_from_config_checks_names_first_and_is_atomic(pm):
    pm.register_plugin("a", make_plugin("a"))
    pm.register_plugin("bad", make_plugin("bad", valid=False))
    with pytest.raises(PluginNotFoundError, match="'nope'"):
        pm.load_from_config({"plugins": ["a", "nope"]})
    assert pm.list_plugins() == []
    with pytest.raises(PluginConfigError):
        pm.load_from_config({"plugins": ["a", "bad"]})
    assert pm.list_plugins() == []
    assert pm.load_from_config({}) == []


def test_managers_share_no_state():
    one, two = PluginManager(), PluginManager()
    assert one.registry is not two.registry and one.hook_manager is not two.hook_manager
    one.register_plugin("a", make_plugin("a"))
    one.load_plugin("a")
    one.setup_all()
    assert "a" not in two.available_plugins() and two.trigger_event("on_step_end") == []
    assert one.registry.has("attention", "sdpa")


def test_default_plugin_manager_uses_default_hook_manager_and_registry():
    from apt.core import registry
    from apt.plugins import hook_manager, plugin_manager

    assert plugin_manager.hook_manager is hook_manager and plugin_manager.registry is registry
    fn = lambda **kw: "global"  # noqa: E731
    hook_manager.register("on_custom_global_probe", fn)
    try:
        assert plugin_manager.trigger_event("on_custom_global_probe") == ["global"]
    finally:
        hook_manager.unregister("on_custom_global_probe", fn)


def test_importing_plugins_and_loading_builtins_does_not_import_torch():
    code = (
        "import sys\n"
        "from apt.plugins import PluginManager\n"
        "pm = PluginManager()\n"
        "for n in ('logging', 'early_stopping', 'gradient_clipping'):\n"
        "    pm.load_plugin(n, {'log_file': '/dev/null'} if n == 'logging' else None)\n"
        "pm.setup_all(); pm.trigger_event('on_validation_end', metrics={'val_loss': 1.0})\n"
        "pm.teardown_all()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert_runs(code)
