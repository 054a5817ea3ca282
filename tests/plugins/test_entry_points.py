"""Third-party plugins found through the ``apt.plugins`` entry-point group (faked)."""

from importlib import metadata

import pytest

from apt.core import Registry
from apt.plugins import HookManager, PluginError, PluginManager

PACKAGE = '''
from apt.plugins import Plugin

class FancyPlugin(Plugin):
    """A plugin shipped by another package."""

    def get_name(self):
        return "fancy"

    def on_train_begin(self, **kwargs):
        return "fancy started"

NOT_A_PLUGIN = 42
'''


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    (tmp_path / "fancy_apt_plugin.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        metadata.EntryPoint("fancy", "fancy_apt_plugin:FancyPlugin", "apt.plugins"),
        metadata.EntryPoint("not_plugin", "fancy_apt_plugin:NOT_A_PLUGIN", "apt.plugins"),
        metadata.EntryPoint("missing", "no_such_module_xyz:Thing", "apt.plugins"),
    ]
    def fake_entry_points(**kwargs):
        assert kwargs == {"group": "apt.plugins"}
        return eps
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    return eps


def test_entry_point_plugins_are_discovered_and_loadable(fake_package):
    pm = PluginManager(registry=Registry(), hook_manager=HookManager())
    assert {"fancy", "not_plugin", "missing", "logging"} <= set(pm.available_plugins())
    plugin = pm.load_plugin("fancy", {"x": 1})
    assert plugin.config == {"x": 1} and type(plugin).__module__ == "fancy_apt_plugin"
    pm.setup_all()
    assert pm.trigger_event("on_train_start") == ["fancy started"]


def test_broken_entry_points_fail_at_load_with_their_target(fake_package):
    pm = PluginManager(registry=Registry(), hook_manager=HookManager())
    with pytest.raises(PluginError, match="not_plugin.*not a subclass"):
        pm.load_plugin("not_plugin")
    with pytest.raises(PluginError, match="'missing'.*no_such_module_xyz:Thing.*cannot be imported"):
        pm.load_plugin("missing")


def test_explicit_entry_point_list_and_disabled_discovery(tmp_path, monkeypatch):
    (tmp_path / "fancy_apt_plugin.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = PluginManager(registry=Registry(), hook_manager=HookManager(), entry_points=False)
    assert "fancy" not in pm.available_plugins()
    assert pm.load_entry_points([metadata.EntryPoint("fancy", "fancy_apt_plugin:FancyPlugin", "apt.plugins")]) == ["fancy"]
    assert pm.load_plugin("fancy").get_description() == "A plugin shipped by another package."
