"""Fixtures every test folder may use; the plain helpers behind them are in tests/helpers.py."""

from __future__ import annotations

import pytest

# the helpers' asserts explain themselves as a test's do
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import compose_cfg  # noqa: E402 - after the rewrite is registered

#: A test that takes longer is marked ``@pytest.mark.slow`` (``make test-fast`` leaves it out).
SLOW_SECONDS = 20.0
_seconds: dict[str, float] = {}
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report):
    """Notes every test over SLOW_SECONDS (setup, call and teardown) that is not marked slow."""
    _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration
    if report.when == "teardown":
        seconds = _seconds.pop(report.nodeid)
        if seconds > SLOW_SECONDS and "slow" not in report.keywords:
            _unmarked_slow.append((seconds, report.nodeid))


def pytest_terminal_summary(terminalreporter):
    """Lists the unmarked slow tests, so the mark keeps up with the suite (wall time: a busy
    machine inflates it, so a test just over the line may only need a second look)."""
    if _unmarked_slow:
        terminalreporter.section(f"tests over {SLOW_SECONDS:.0f} s without @pytest.mark.slow")
        for seconds, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(*overrides)``: a tiny run's config (warmup 2 steps) whose data cache is in
    this test's tmp_path."""

    def make(*overrides):
        return compose_cfg("optim.warmup_steps=2", *overrides, cache_dir=tmp_path / "cache")

    return make


@pytest.fixture
def offline_tiktoken(tmp_path, monkeypatch):
    """tiktoken as on a machine without network: an empty cache, no ``gpt2`` loaded, and every
    download raising ``requests.ConnectionError``."""
    import requests
    import tiktoken.load
    import tiktoken.registry

    def no_network(url):
        raise requests.ConnectionError(f"cannot reach {url}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
