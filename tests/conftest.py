"""Fixtures every test folder may use; the plain helpers behind them are in tests/helpers.py."""

from __future__ import annotations

import pytest

# the helpers' asserts explain themselves as a test's do
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import compose_cfg  # noqa: E402 - after the rewrite is registered


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
