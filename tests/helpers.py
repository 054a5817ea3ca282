"""What many tests share: APT's real ``conf/`` composed small, a tiny run, test plugins and providers.

Import these by name (``from tests.helpers import compose_cfg, train``): the suite runs in
pytest's importlib mode with ``tests`` as a package, where a conftest is not importable as a
module. The fixtures built on them are in ``tests/conftest.py``.

Every config is composed by :func:`apt.compose.compose`, the path ``python train.py`` takes,
so a test sees exactly the config a user would get from the same command line.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from apt.compose import compose, conf_dir
from apt.core import Provider
from apt.plugins import Plugin

__all__ = ["CONF", "TINY", "Boom", "Flaky", "MyAttentionLayer", "MyAttentionProvider", "assert_runs", "compose_cfg",
           "read_csv", "train"]

#: APT's own config tree (the one train.py composes).
CONF = conf_dir()

#: A run small enough for a test: the tiny model on synthetic data with the debug trainer.
TINY: tuple[str, ...] = ("model=tiny", "data=synthetic", "trainer=debug")


def compose_cfg(*overrides: str, base: Sequence[str] = TINY, cache_dir: str | Path | None = None) -> DictConfig:
    """The config of ``python train.py <base> <overrides>``; ``cache_dir`` keeps prepared data in a
    test's tmp_path instead of the shared default cache."""
    cache = [f"data.cache_dir={cache_dir}"] if cache_dir is not None else []
    return compose([*base, *cache, *overrides])


def train(cfg: DictConfig, out: Path, *, plugin_manager: Any = None, strict: bool = True) -> float:
    """Run ``cfg`` as train.py does, writing into ``out``; returns the final validation loss.

    Without ``plugin_manager`` a fresh one is made (``strict``: a failing hook raises instead of
    being logged), so no test sees plugins another test registered.
    """
    from apt.app import new_plugin_manager, run

    out.mkdir(parents=True, exist_ok=True)
    return run(cfg, out_dir=out, plugin_manager=plugin_manager or new_plugin_manager(strict=strict))


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file a run wrote (``metrics.csv``, ``epochs.csv``), as dicts of strings."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def assert_runs(code: str, *, timeout: float = 120) -> None:
    """Runs ``code`` in a fresh interpreter and asserts it exits 0, showing its stderr otherwise.

    For what only a new process can tell, such as ``'torch' not in sys.modules`` after an import.
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr


class Boom(Plugin):
    """Adds a NaN term to the loss at the steps in its config (``{steps: [..]}``)."""

    def get_name(self):
        return "boom"

    def on_batch_end(self, step=None, trainer=None, outputs=None, **kw):
        if step in self.config.get("steps", []):
            trainer.add_loss("boom", outputs[1] * math.nan)


class Flaky(Plugin):
    """A plugin with a bug from its second step on (as plugin.moe.layers=[5] had mid-run);
    select it with ``+plugin.flaky={_target_: tests.helpers.Flaky}``."""

    def get_name(self):
        return "flaky"

    def on_step_begin(self, step=None, **kwargs):
        if step >= 2:
            raise IndexError(f"index {step} is out of range")


# -- The plugin guide's provider (spec/PLUGIN_GUIDE.md, "Creating a Provider") ----------------
class MyAttentionLayer(nn.Module):
    """The layer the guide's provider returns: causal attention, (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)

    def forward(self, x):
        T = x.size(1)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # (T, T), True = masked
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


class MyAttentionProvider(Provider):
    """Custom attention provider."""

    def __init__(self, config):
        self.config = config

    def get_name(self) -> str:
        return "my_attention"

    def get_version(self) -> str:
        return "1.0.0"

    def create_layer(self, d_model, num_heads, dropout=0.0, **kwargs):
        """Create attention layer."""
        return MyAttentionLayer(d_model, num_heads, dropout)

    def validate_config(self, config) -> bool:
        """Validate configuration."""
        return config.get('d_model', 0) > 0
