"""Compose the same config ``train.py`` would, from command-line overrides, without running.

The CLI must answer "what will this run do?" for exactly the config ``python train.py
<overrides>`` would get, so it composes ``conf/config.yaml`` with Hydra's compose API and
the same structured-config schemas ``train.py`` registers. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["CONFIG_NAME", "ConfigDirError", "compose_config", "find_config_dir"]

#: The primary config ``train.py`` uses.
CONFIG_NAME = "config"
#: Environment variable naming the config directory (overridden by ``--config-dir``).
CONFIG_DIR_ENV = "APT_CONFIG_DIR"


class ConfigDirError(FileNotFoundError):
    """No ``conf/`` directory with a ``config.yaml`` was found."""


def find_config_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config directory: ``explicit``, ``$APT_CONFIG_DIR``, ``./conf``, or APT's own ``conf``.

    APT's own configs (:data:`apt.resources.CONF_DIR`: the clone's or the wheel's) come last
    so that a project which copied and edited ``conf/`` sees its own configs when it runs the
    CLI from its directory.
    """
    from apt.resources import CONF_DIR

    candidates = [explicit, os.environ.get(CONFIG_DIR_ENV), Path.cwd() / "conf", CONF_DIR]
    tried = []
    for cand in candidates:
        if not cand:
            continue
        path = Path(cand).expanduser().resolve()
        if (path / f"{CONFIG_NAME}.yaml").is_file():
            return path
        tried.append(str(path))
        if cand is explicit:
            break
    raise ConfigDirError(
        f"no {CONFIG_NAME}.yaml found in {tried}; pass --config-dir DIR or set {CONFIG_DIR_ENV}"
    )


def compose_config(overrides: Sequence[str] = (), config_dir: str | os.PathLike[str] | None = None,
                   *, with_hydra: bool = False) -> DictConfig:
    """The config ``python train.py <overrides>`` composes (``hydra`` node only if asked).

    Raises Hydra's own errors for unknown groups, options and keys; they already name the
    bad value and list the valid options.
    """
    from hydra import compose, initialize_config_dir

    from apt.app import ConfigProblems, check_overrides
    from apt.training.schema import register_configs

    conf = find_config_dir(config_dir)
    problems = check_overrides(overrides, conf)  # as train.py: unknown options with choices
    if problems:
        raise ConfigProblems(problems)
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="apt"):
        return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=with_hydra)
