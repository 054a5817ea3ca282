"""Training from the command line: ``python train.py`` in a clone, ``python -m apt train`` anywhere.

Both are this module's :func:`main`. The run is compose -> check -> build -> train
(:mod:`apt.compose`, :mod:`apt.checks`, :mod:`apt.build`, :mod:`apt.training`). Before Hydra
creates a run directory, :func:`apt.app.prepare` composes and checks the command line as
``python -m apt check`` does: a mistake is one ``error:`` line and exit status 2. Hydra then
composes the run from APT's configs (:func:`apt.compose.conf_dir`: the clone's ``conf/`` or
the copy an installed wheel ships) and :func:`apt.app.main` checks, builds and trains it,
returning the final validation loss (so Hydra sweepers can minimise it).

``trainer.resume=true hydra.run.dir=D`` is D's run (:mod:`apt.resume`): Hydra is given D's
saved config, with the resumable changes, as its primary config (from a scratch copy), and
writes nothing into ``D/.hydra``; the job appends the command line to D's overrides history.

``--help`` lists every group and option (``--hydra-help``: Hydra's flags); ``--config-dir
DIR`` adds a directory of your own configs in front of APT's. Run outputs go under the
current directory (``outputs/``, ``multirun/``), wherever APT is installed. Only composing
and checking happen before training, so ``--help`` and ``--cfg`` answer without torch.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from apt.app import main as run_app
from apt.app import prepare, resuming
from apt.compose import CONFIG_NAME, conf_dir, config_dir_argv, hydra_args
from apt.core.errors import CONFIG_ERROR_EXIT, ConfigProblems, ends_in_one_line, report
from apt.resume import ResumePlan, is_hydra_override
from apt.training.schema import register_configs

__all__ = ["main", "missing_extras", "task"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=CONFIG_NAME)
def task(cfg: DictConfig) -> float:
    """The Hydra task: one run (or one job of a sweep); returns the final validation loss."""
    return run_app(cfg)


def missing_extras(argv: Sequence[str]) -> list[str]:
    """Optional packages the command line selects but this environment lacks, one line each.

    Plugins check their own packages when created; the Optuna sweeper is Hydra's to build,
    so it is checked here, before Hydra starts the sweep.
    """
    wants_optuna = any(re.fullmatch(r"(hparams_search|hydra/sweeper)=optuna", a) for a in argv)
    if wants_optuna and importlib.util.find_spec("optuna") is None:
        return ["hydra/sweeper=optuna needs Optuna: pip install 'apt[optuna]'"]
    return []


@ends_in_one_line
def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Check the command line, then hand it to Hydra; returns the exit status (an interrupt or
    a full disk is one line, :func:`apt.core.errors.ends_in_one_line`)."""
    from apt.training import distributed

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        problems = missing_extras(args)
        if problems:
            raise ConfigProblems(problems)
        prepared = prepare(args)
        if prepared.answered:  # --help is answered here
            return 0
    except ConfigProblems as exc:
        report(exc)
        return CONFIG_ERROR_EXIT
    worker = distributed.env_world_size() > 1
    distributed.leave_by_exit(worker)
    with tempfile.TemporaryDirectory(prefix="apt-resume-") as scratch, resuming(prepared.resume):
        hydra_argv = (config_dir_argv(args, Path(scratch)) if prepared.resume is None
                      else resume_argv(args, prepared.resume, Path(scratch)))
        # under torchrun, rank 0 alone writes a run directory
        sys.argv = [prog or sys.argv[0], *hydra_argv, *distributed.worker_hydra_overrides()]
        task()
    if worker:  # the run is complete: end without torch's C++ teardown (exit_worker says why)
        distributed.exit_worker(0)
    return 0


def resume_argv(args: Sequence[str], plan: ResumePlan, scratch: Path) -> list[str]:
    """Hydra's command line for a resume: the run's saved config (resumable changes applied,
    written to ``scratch``) as the primary config, the hydra overrides and flags as given,
    and nothing written into the run's ``.hydra/`` by Hydra (the job records the resume)."""
    OmegaConf.save(plan.config, scratch / f"{CONFIG_NAME}.yaml")
    ns = hydra_args(args)
    out = ["--config-path", str(scratch), "--config-name", CONFIG_NAME]
    for flag, value in (("--cfg", ns.cfg), ("--package", ns.package), ("--info", ns.info)):
        if value:
            out += [flag, value]
    if ns.resolve:
        out.append("--resolve")
    return [*out, *(o for o in ns.overrides if is_hydra_override(o)), "hydra.output_subdir=null"]
