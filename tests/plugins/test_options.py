"""Declared plugin options: unknown keys and wrong types fail at creation, defaults fill in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from apt.plugins import (
    Plugin,
    PluginConfigError,
    PluginManager,
    PluginOptionError,
    describe_options,
)
from apt.plugins.builtin.early_stopping import EarlyStoppingPlugin
from apt.plugins.options import check_options


@dataclass
class DemoOptions:
    steps: int = 3
    rate: float = 0.5
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    layers: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DemoPlugin(Plugin):
    Options = DemoOptions

    def get_name(self) -> str:
        return "demo"


def test_defaults_fill_config_and_options():
    p = DemoPlugin({"steps": 7})
    assert p.config == {"steps": 7, "rate": 0.5, "name": "x", "flag": False, "mode": "a",
                        "limit": None, "layers": None, "extra": {}}
    assert p.options.steps == 7 and p.options.rate == 0.5
    assert p.config.get("steps") == 7  # guide-style reads agree with the declaration


def test_int_is_accepted_for_float_and_stored_as_float():
    p = DemoPlugin({"rate": 2})
    assert p.options.rate == 2.0 and isinstance(p.options.rate, float)


def test_unknown_option_names_the_key_a_near_miss_and_the_valid_ones():
    with pytest.raises(PluginOptionError) as exc:
        DemoPlugin({"stpes": 3})
    msg = str(exc.value)
    assert "plugin 'demo'" in msg and "'stpes'" in msg and "did you mean 'steps'" in msg
    assert "valid options: ['extra', 'flag', 'layers', 'limit', 'mode', 'name', 'rate', 'steps']" in msg


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("steps", "abc", "an integer"),
    ("steps", 2.5, "an integer"),
    ("steps", True, "an integer"),  # a bool is not an integer here
    ("rate", "fast", "a number"),
    ("flag", 1, "a boolean"),
    ("mode", "c", "one of 'a', 'b'"),
    ("limit", "3", "an integer or null"),
    ("layers", [1, "x"], "a list (an integer each) or null"),
    ("extra", [1], "a mapping"),
])
def test_wrong_type_names_key_value_and_expected_type(key, value, expected):
    with pytest.raises(PluginOptionError) as exc:
        DemoPlugin({key: value})
    assert f"option {key}={value!r} must be {expected}" in str(exc.value)


def test_required_option_without_default():
    @dataclass
    class Needs:
        path: str

    with pytest.raises(PluginOptionError, match="option 'path' .*is required"):
        check_options(Needs, {}, owner="plugin 'p'")
    assert check_options(Needs, {"path": "a"}, owner="plugin 'p'") == {"path": "a"}


def test_uncheckable_declaration_is_refused():
    @dataclass
    class Bad:
        when: complex = 1j

    with pytest.raises(TypeError, match="cannot check option type"):
        check_options(Bad, {}, owner="plugin 'p'")


def test_manager_reports_option_errors_as_config_errors():
    pm = PluginManager()
    with pytest.raises(PluginConfigError) as exc:
        pm.load_plugin("early_stopping", {"patiance": 3})
    assert "did you mean 'patience'" in str(exc.value) and "could not be created" not in str(exc.value)
    assert pm.load_plugin("early_stopping", {"patience": 3}).patience == 3


def test_plugins_without_options_keep_their_config_as_given():
    class Free(Plugin):
        def get_name(self) -> str:
            return "free"

    assert Free({"anything": 1}).config == {"anything": 1}


def test_describe_options_rows():
    rows = {name: (tp, default) for name, tp, default in describe_options(EarlyStoppingPlugin.Options)}
    assert rows["patience"] == ("an integer", 5)
    assert rows["mode"] == ("one of 'min', 'max'", "min")
