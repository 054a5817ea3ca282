"""Every built-in plugin's declared options agree with its conf/plugin file and docs/plugins.md.

A plugin declares its options once (``Plugin.Options``); the config file a user edits and
the docs a user reads must show exactly those options with their defaults and types.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from apt.compose import conf_dir
from apt.plugins import PluginManager
from apt.plugins.builtin import BUILTIN_PLUGINS
from apt.plugins.options import check_options, describe_options

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
PLUGINS = sorted(BUILTIN_PLUGINS)


def declared_options(name: str) -> type:
    options = PluginManager(entry_points=False).get_plugin_class(name).Options
    assert options is not None, f"built-in plugin {name!r} declares no Options"
    return options


def doc_tables() -> dict[str, list[tuple[str, str, str]]]:
    """``{plugin: [(option, type, default), ...]}`` from the tables of docs/plugins.md."""
    tables: dict[str, list[tuple[str, str, str]]] = {}
    current = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^### `(\w+)`", line):
            current = tables.setdefault(m[1], [])
        elif current is not None and (m := re.match(r"^\| `(\w+)` \| ([^|]+) \| `([^`]*)` \|", line)):
            current.append((m[1], m[2].strip(), m[3]))
    return tables


@pytest.mark.parametrize("name", PLUGINS)
def test_conf_file_lists_every_declared_option_with_its_default(name):
    options = declared_options(name)
    node = yaml.safe_load((conf_dir() / "plugin" / f"{name}.yaml").read_text(encoding="utf-8"))[name]
    assert node.pop("_target_") == BUILTIN_PLUGINS[name].replace(":", ".")
    declared = {opt: default for opt, _, default in describe_options(options)}
    assert sorted(node) == sorted(declared), f"conf/plugin/{name}.yaml keys differ from {options.__name__}"
    assert check_options(options, node, owner=name) == node  # every value has the declared type
    assert node == declared, f"conf/plugin/{name}.yaml restates a default differently"


@pytest.mark.parametrize("name", PLUGINS)
def test_docs_table_matches_the_declaration(name):
    rows = doc_tables().get(name)
    expected = [(opt, kind, json.dumps(default)) for opt, kind, default in describe_options(declared_options(name))]
    assert rows == expected, f"docs/plugins.md, section `{name}`"


def test_every_built_in_plugin_is_documented():
    assert set(doc_tables()) == set(BUILTIN_PLUGINS)


def test_builtin_plugins_are_created_and_checked_without_torch():
    """Creating and checking a built-in plugin (what ``apt check`` does) must not import torch."""
    code = textwrap.dedent(f"""
        import sys
        from apt.plugins import PluginManager
        pm = PluginManager(entry_points=False)
        for name in {PLUGINS!r}:
            pm.load_plugin(name, {{}})
            assert "torch" not in sys.modules, name
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
