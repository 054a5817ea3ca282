"""A run, from a composed config to its final validation loss: check -> build -> train.

train.py calls :func:`preflight` with its command line before Hydra creates anything: it
composes the config (:mod:`apt.compose`) and checks it (:mod:`apt.checks`) exactly as
``python -m apt check`` does, so a configuration error is one ``error:`` line, exit status
2, and no run directory. Hydra then composes again and calls :func:`main` (the task
function of every run and of every multirun job), which checks once more (a multirun job's
values are checked here, where a failure is recorded as that job's error), builds
(:mod:`apt.build`) and trains (:meth:`apt.training.Trainer.fit`), then writes the summary.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.checks import CheckedRun, check_run, new_plugin_manager
from apt.core.errors import CONFIG_ERROR_EXIT, ConfigProblems, report

__all__ = ["ConfigProblems", "check_config", "main", "new_plugin_manager", "preflight", "run"]

log = logging.getLogger("apt")


# -- before Hydra: the command line ---------------------------------------------------------
def check_config(overrides: Sequence[str], config_dir: str | None = None) -> list[str]:
    """``python -m apt check``: compose and check as train.py would; returns the warnings.

    The run directory is checked for writability where train.py would create it; plugins
    are set up (and torn down) in a scratch directory, so nothing is written. Raises
    ConfigProblems.
    """
    from hydra.types import RunMode
    from omegaconf import open_dict

    from apt.compose import compose

    cfg = compose(overrides, config_dir, with_hydra=True)
    if OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN:
        return []  # a sweep preset (hparams_search=optuna): each trial is checked when it runs
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    with open_dict(cfg):
        del cfg["hydra"]
    with tempfile.TemporaryDirectory(prefix="apt-check-") as scratch:
        checked = check_run(cfg, run_dir=run_dir, plugin_dir=Path(scratch))
        checked.plugins.teardown_all()
    return checked.warnings


def preflight(argv: Sequence[str]) -> bool:
    """Check train.py's command line before Hydra runs it; raises ConfigProblems.

    Returns True when the command line is answered here (``--help``, printed from the
    config directories: Hydra's own takes seconds). A single run is checked completely
    (:func:`check_config`). A sweep (``-m``) is checked for composition errors in every
    swept value (a typo ends it before any job starts); each job's values are checked by
    the job, which fails alone and is recorded.
    """
    from hydra.types import RunMode

    from apt.compose import compose, help_text, hydra_args, sweep_variants

    args = hydra_args(argv)
    if args.help:
        print(help_text(args.overrides, args.config_dir), end="")
        return True
    if args.hydra_help or args.shell_completion:
        return False
    variants = sweep_variants(args.overrides)
    if args.multirun or variants != [list(args.overrides)]:  # -m, or sweep values (hparams_search)
        for overrides in variants:
            cfg = compose(overrides, args.config_dir, with_hydra=True)
        if not args.multirun and OmegaConf.select(cfg, "hydra.mode") != RunMode.MULTIRUN:
            swept = sorted(set(args.overrides) - {o for v in variants for o in v})
            raise ConfigProblems([f"{' '.join(swept)}: sweep values need a sweep; add -m"])
    elif args.cfg or args.info:
        compose(args.overrides, args.config_dir)
    else:
        for line in check_config(args.overrides, args.config_dir):
            print(f"warning: {line}", file=sys.stderr)
    return False


# -- the Hydra task function --------------------------------------------------------------------
def main(cfg: DictConfig) -> float:
    """Hydra task function: run, or print the problems and exit with status 2."""
    from apt.training.checkpoint import CheckpointError

    try:
        return run(cfg)
    except ConfigProblems as exc:
        report(exc)
        if _in_multirun():
            raise  # one failed job of a sweep: Hydra records it, the sweep goes on
        _remove_fresh_run_dir()
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if _in_multirun():
            raise
        raise SystemExit(1) from None


def run(cfg: DictConfig, *, out_dir: str | Path | None = None, plugin_manager: Any = None) -> float:
    """Check, build and train ``cfg``; returns the final validation loss.

    ``out_dir`` defaults to Hydra's run directory (None outside Hydra: nothing is written);
    ``plugin_manager`` to a fresh one (:func:`new_plugin_manager`).
    """
    from apt.build import build
    from apt.training import distributed

    if out_dir is None:
        out_dir = _hydra_output_dir()
    ctx = _join_process_group(cfg)
    finished = False
    try:
        out_dir = ctx.broadcast_object(out_dir)  # under torchrun: rank 0's run directory
        checked = check_run(cfg, run_dir=out_dir, plugin_manager=plugin_manager)
        for line in checked.warnings:
            log.warning(line)
        try:
            val = _train(build(checked, ctx), checked, ctx)
            finished = True
            return val
        finally:
            checked.plugins.teardown_all()
    finally:
        distributed.teardown(ctx, finished=finished)


def _train(built: Any, checked: CheckedRun, ctx: Any) -> float:
    """Fit, log the summary line, write summary.json; returns the final validation loss."""
    trainer, cfg = built.trainer, checked.config
    log.info("training: %d steps (%d per epoch, ~%d epochs), %d tokens per step, plugins %s",
             trainer.max_steps, trainer.steps_per_epoch, built.epochs, trainer.tokens_per_step,
             checked.plugins.list_plugins() or "none")
    t_start = time.perf_counter()
    try:
        summary = trainer.fit(resume_from=cfg.ckpt_path, auto_resume=bool(cfg.trainer["resume"]))
    finally:
        trainer.schedule.deactivate()  # ${schedule:...} must not read this run's values later
    wall = time.perf_counter() - t_start
    val = summary["val_loss"]
    out_dir = cfg.run_dir
    if cfg.trainer["eval_test"]:
        test = trainer.evaluate_split(built.data.test)
        summary.update(test_loss=test.loss, test_loss_se=test.se, test_tokens=test.tokens, test_bpb=test.bpb)
        log.info("test loss %s", test)
    from apt.training.evaluation import describe

    final = describe(val, summary["val_loss_se"], summary["val_tokens"], summary["val_bpb"])
    log.info("summary: params %.2fM | steps %d | epochs %d | %.0f tokens/s | final val loss %s | "
             "best val loss %.4f (step %d, %s periodic tokens) | %.1fs%s%s", built.n_params / 1e6,
             summary["step"], summary["epoch"], summary["tokens_per_s"], final, summary["best_val_loss"],
             summary["best_step"], f"{summary['best_val_tokens']:,}", wall,
             f" | stopped: {summary['stopped']}" if summary["stopped"] else "",
             f" | out: {out_dir}" if out_dir else "")
    if out_dir is not None and ctx.is_main:
        import json

        (Path(out_dir) / "summary.json").write_text(json.dumps(
            {**summary, "params": built.n_params, "wall_s": wall}, indent=2, default=str), encoding="utf-8")
    if trainer.interrupted_by is not None:
        raise SystemExit(128 + int(trainer.interrupted_by))
    return float(val)


# -- helpers ----------------------------------------------------------------------------------
def _join_process_group(cfg: DictConfig) -> Any:
    """Under torchrun, join the process group (the device picks the backend); else a no-op context."""
    from apt.build import resolve_device
    from apt.checks.paths import device_problem
    from apt.training import distributed

    if distributed.env_world_size() <= 1:
        return distributed.DistContext()
    device, strategy = str(cfg.trainer.device), str(cfg.trainer.strategy)
    problems = [p for p in (device_problem(device),) if p]
    if strategy not in distributed.STRATEGIES:
        problems.append(f"trainer.strategy={strategy!r} is not one of {list(distributed.STRATEGIES)}")
    if problems:
        raise ConfigProblems(problems)
    return distributed.setup(resolve_device(device), strategy)


def _in_multirun() -> bool:
    """Inside a Hydra multirun job, where SystemExit would end the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return None


def _remove_fresh_run_dir() -> None:
    """Delete the run directory Hydra made for a run refused by its config (no leftovers).

    Only Hydra's own files (``.hydra/`` and the log) may be in it: a directory holding
    anything else (an earlier run's checkpoints) is left alone.
    """
    from hydra.core.hydra_config import HydraConfig

    out = _hydra_output_dir()
    subdir = HydraConfig.get().output_subdir if out is not None else None
    if out is None or subdir is None or not (out / subdir).is_dir() or out.resolve() == Path.cwd().resolve():
        return  # not a directory Hydra made for this run (torchrun workers run in the cwd)
    if {p.name for p in out.iterdir()} <= {subdir, f"{HydraConfig.get().job.name}.log"}:
        shutil.rmtree(out, ignore_errors=True)
