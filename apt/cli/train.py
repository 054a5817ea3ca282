"""Training from the command line: ``python train.py`` in a clone, ``python -m apt train`` anywhere.

Both are this module's :func:`main`: Hydra composes APT's configs (:data:`apt.resources.CONF_DIR`,
the clone's ``conf/`` or the copy an installed wheel ships) with the command line, and
:func:`apt.app.main` validates, trains and returns the final validation loss (so Hydra
sweepers can minimise it). Every Hydra flag works as usual (``--help``, ``--cfg job``,
``-m``); ``--config-dir DIR`` puts a directory of your own configs in front of APT's, so it
can add options to any group (``model/mine.yaml``) or replace ``config.yaml`` itself. Run
outputs go under the current directory (``outputs/``, ``multirun/``), wherever APT is
installed. Only composing and checking happen before training, so ``--help`` and ``--cfg``
answer without importing torch.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from apt.app import check_overrides
from apt.app import main as run_app
from apt.resources import CONF_DIR
from apt.training.schema import register_configs

__all__ = ["main", "task"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """The Hydra task: one run (or one job of a sweep); returns the final validation loss."""
    return run_app(cfg)


def user_config_dir(argv: Sequence[str]) -> Path | None:
    """The value of Hydra's ``--config-dir``/``-cd`` flag in ``argv``, if given."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config-dir="):
            return Path(arg.split("=", 1)[1])
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            return Path(argv[i + 1])
    return None


def missing_extras(argv: Sequence[str]) -> list[str]:
    """Optional packages the command line selects but this environment lacks, one line each.

    Plugins check their own packages when created; the Optuna sweeper is Hydra's to build,
    so it is checked here, before Hydra starts the sweep.
    """
    wants_optuna = any(re.fullmatch(r"(hparams_search|hydra/sweeper)=optuna", a) for a in argv)
    if wants_optuna and importlib.util.find_spec("optuna") is None:
        return ["hydra/sweeper=optuna needs Optuna: pip install 'apt[optuna]'"]
    return []


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Check the group options named on the command line, then hand ``argv`` to Hydra.

    Returns 0 after a run; configuration errors print ``error: ...`` lines and exit with 2.
    """
    from apt.training.distributed import worker_hydra_overrides

    args = list(sys.argv[1:] if argv is None else argv)
    args += worker_hydra_overrides()  # under torchrun, rank 0 alone writes a run directory
    user_dir = user_config_dir(args)
    problems = check_overrides(args, CONF_DIR, *([user_dir] if user_dir is not None else []))
    problems += missing_extras(args)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 2
    sys.argv = [prog or sys.argv[0], *args]
    task()
    return 0
