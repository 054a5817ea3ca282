"""Compose the real conf/ tree, shrunk to a tiny model on synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from apt.training.schema import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY = ["model=tiny", "data=synthetic", "trainer=debug", "optim.warmup_steps=2"]


def compose_cfg(overrides=(), tiny=True):
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides])


@pytest.fixture
def cfg_factory(tmp_path):
    def make(*overrides):
        return compose_cfg([f"data.cache_dir={tmp_path / 'cache'}", *overrides])

    return make
