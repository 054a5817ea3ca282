"""The test suite's own layout: no test folder may shadow an installed package.

``tests/kernels/`` once did: pytest's default ``prepend`` import mode put ``tests/`` on
``sys.path``, so transformers' ``import kernels`` (Hugging Face's package) found the test
folder and every export test failed in the full run while passing alone. The suite now runs
in ``importlib`` mode with ``tests`` as the one top-level package, so a test folder is only
ever importable as ``tests.<name>``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _test_folders() -> list[str]:
    return sorted(p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def test_no_test_folder_is_importable_under_its_own_name() -> None:
    folders = _test_folders()
    assert "kernels" in folders  # the folder that once shadowed Hugging Face's `kernels`
    for name in folders:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or ""
        assert not where.startswith(str(TESTS)), f"sys.modules[{name!r}] is the test folder {where}"
        spec = importlib.util.find_spec(name)
        origin = (spec.origin or "") if spec is not None else ""
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        assert not origin.startswith(str(TESTS)), f"`import {name}` would load the test folder {origin}"
        assert not any(str(loc).startswith(str(TESTS)) for loc in locations), \
            f"`import {name}` would find the test folder {locations}"


def test_tests_folder_is_not_on_sys_path() -> None:
    assert str(TESTS) not in sys.path
