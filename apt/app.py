"""A run, from a composed config to its final validation loss: check -> build -> train.

train.py calls :func:`prepare` with its command line before Hydra creates anything: it
composes the config (:mod:`apt.compose`; for ``trainer.resume=true`` in a run directory,
the run's saved config, :mod:`apt.resume`) and checks it (:mod:`apt.checks`) exactly as
``python -m apt check`` does, so a configuration error is one ``error:`` line, exit status
2, and no run directory. Hydra then composes again and calls :func:`main` (the task
function of every run and of every multirun job), which checks once more (a multirun job's
values are checked here, where a failure is recorded as that job's error), takes the run
directory's lock (:mod:`apt.training.runlock`), builds (:mod:`apt.build`) and trains
(:meth:`apt.training.Trainer.fit`), then writes the summary. A run that failed (a plugin
disabled by repeated hook failures, or a plugin that could not do its part: see
:meth:`apt.training.Trainer.fail`) still writes its summary, then raises :class:`RunFailed`:
one ``error:`` line and exit status 1, or a failed job of a sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.checks import CheckedRun, check_run, new_plugin_manager
from apt.core.errors import CONFIG_ERROR_EXIT, INTERRUPTED_EXIT, ConfigProblems, report
from apt.resume import ResumePlan, record_resume, resume_plan

__all__ = ["ConfigProblems", "Prepared", "RunFailed", "check_config", "main", "new_plugin_manager", "preflight",
           "prepare", "resuming", "run"]

log = logging.getLogger("apt")

#: The resume the Hydra job started by apt.cli.train continues (set by :func:`resuming`).
_RESUMING: ResumePlan | None = None


class RunFailed(RuntimeError):
    """The run ended but is not the run that was asked for (a plugin failed); its summary.json
    is written and says why (``failed``). Exit status 1."""


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` found: whether it answered the command line itself (``--help``),
    and the run directory's saved run when the command line resumes it."""

    answered: bool
    resume: ResumePlan | None = None


# -- before Hydra: the command line ---------------------------------------------------------
def check_config(overrides: Sequence[str], config_dir: str | None = None) -> list[str]:
    """``python -m apt check``: compose and check as train.py would; returns the warnings.

    The run directory is checked for writability where train.py would create it; plugins
    are set up (and torn down) in a scratch directory, so nothing is written. Raises
    ConfigProblems.
    """
    return _check(overrides, config_dir)[0]


def _check(overrides: Sequence[str], config_dir: str | None) -> tuple[list[str], ResumePlan | None]:
    from hydra.types import RunMode

    from apt.compose import compose

    cfg = compose(overrides, config_dir, with_hydra=True)
    _check_callbacks(cfg)
    if OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN:
        return [], None  # a sweep preset (hparams_search=optuna): each trial is checked when it runs
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    plan = resume_plan(overrides, config_dir, composed=cfg)
    task = plan.config if plan is not None else _without_hydra(cfg)
    with tempfile.TemporaryDirectory(prefix="apt-check-") as scratch:
        checked = check_run(task, run_dir=run_dir, plugin_dir=Path(scratch))
        checked.plugins.teardown_all()
    return checked.warnings, plan


def _check_callbacks(cfg: DictConfig) -> None:
    """Hydra creates ``hydra.callbacks`` before the run: each is checked to be a callback class
    first (:func:`apt.checks.targets.callback_problems`), so none that is not is ever called."""
    from apt.checks.targets import callback_problems

    node = OmegaConf.select(cfg, "hydra.callbacks")
    problems = callback_problems(OmegaConf.to_container(node, resolve=False) if node is not None else {})
    if problems:
        raise ConfigProblems(problems)


def preflight(argv: Sequence[str]) -> bool:
    """:func:`prepare`, answering only whether the command line was handled here (``--help``)."""
    return prepare(argv).answered


def prepare(argv: Sequence[str]) -> Prepared:
    """Check train.py's command line before Hydra runs it; raises ConfigProblems.

    ``--help`` is answered here (printed from the config directories: Hydra's own takes
    seconds). A single run is checked completely (:func:`check_config`), and when it resumes
    a run directory its saved run is returned (:func:`apt.resume.resume_plan`). A sweep
    (``-m``) is checked for composition errors in every swept value (a typo ends it before
    any job starts); each job's values are checked by the job, which fails alone and is
    recorded.
    """
    from hydra.types import RunMode

    from apt.compose import compose, help_text, hydra_args, sweep_variants

    args = hydra_args(argv)
    if args.help:
        print(help_text(args.overrides, args.config_dir), end="")
        return Prepared(answered=True)
    if args.hydra_help or args.shell_completion:
        return Prepared(answered=False)
    variants = sweep_variants(args.overrides)
    if args.multirun or variants != [list(args.overrides)]:  # -m, or sweep values (hparams_search)
        for overrides in variants:
            cfg = compose(overrides, args.config_dir, with_hydra=True)
            _check_callbacks(cfg)
        if not args.multirun and OmegaConf.select(cfg, "hydra.mode") != RunMode.MULTIRUN:
            swept = sorted(set(args.overrides) - {o for v in variants for o in v})
            raise ConfigProblems([f"{' '.join(swept)}: sweep values need a sweep; add -m"])
        return Prepared(answered=False)
    if args.cfg or args.info:
        return Prepared(answered=False, resume=resume_plan(args.overrides, args.config_dir))
    warnings_, plan = _check(args.overrides, args.config_dir)
    for line in warnings_:
        print(f"warning: {line}", file=sys.stderr)
    return Prepared(answered=False, resume=plan)


@contextlib.contextmanager
def resuming(plan: ResumePlan | None) -> Iterator[None]:
    """Within: the Hydra job :func:`main` runs continues ``plan`` (its history is recorded)."""
    global _RESUMING
    _RESUMING = plan
    try:
        yield
    finally:
        _RESUMING = None


# -- the Hydra task function --------------------------------------------------------------------
def main(cfg: DictConfig) -> float:
    """Hydra task function: run, or print the problem in one line (exit status 2 for a config
    problem; 1 for an unreadable checkpoint, a non-finite loss, a failed plugin or a disk with
    no room left, naming the file; 130 for a second Ctrl-C, which stops at once, without saving)."""
    from apt.core.files import no_space_line
    from apt.training.checkpoint import CheckpointError
    from apt.training.nonfinite import NonFiniteLoss

    try:
        return run(cfg, resume=_RESUMING)
    except ConfigProblems as exc:
        report(exc)
        if _in_multirun():
            raise  # one failed job of a sweep: Hydra records it, the sweep goes on
        _remove_fresh_run_dir()
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    except Exception as exc:
        failed = isinstance(exc, CheckpointError | NonFiniteLoss | RunFailed)
        line = str(exc) if failed else no_space_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        if _in_multirun():
            raise
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        out = _hydra_output_dir()
        if _in_multirun() or out is None or os.environ.get("APT_DEBUG"):
            raise  # the command's one line (apt.core.errors.ends_in_one_line) ends the sweep
        print(f"interrupted: the run stopped without saving; trainer.resume=true hydra.run.dir={out} "
              "continues from its last checkpoint", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None


def run(cfg: DictConfig, *, out_dir: str | Path | None = None, plugin_manager: Any = None,
        resume: ResumePlan | None = None) -> float:
    """Check, build and train ``cfg``; returns the final validation loss (raises RunFailed
    after writing the summary when a plugin failed).

    ``out_dir`` defaults to Hydra's run directory (None outside Hydra: nothing is written);
    ``plugin_manager`` to a fresh one (:func:`new_plugin_manager`). ``resume``: the run
    directory's saved run this one continues; its config and overrides history are saved
    once the run holds the directory.
    """
    from apt.build import build
    from apt.training import distributed

    if out_dir is None:
        out_dir = _hydra_output_dir()
    ctx = _join_process_group(cfg)
    finished = False
    try:
        out_dir = ctx.broadcast_object(out_dir)  # under torchrun: rank 0's run directory
        checked = check_run(cfg, run_dir=out_dir, plugin_manager=plugin_manager, writer=ctx.is_main)
        for line in checked.warnings:
            log.warning(line)
        try:
            with _hold_run_dirs(checked, ctx), _warnings_logged():
                if resume is not None and ctx.is_main:
                    record_resume(resume)
                val = _train(build(checked, ctx), checked, ctx)
            finished = True
            return val
        finally:
            checked.plugins.teardown_all()
    finally:
        distributed.teardown(ctx, finished=finished)


def _train(built: Any, checked: CheckedRun, ctx: Any) -> float:
    """Fit, log the summary line, write summary.json; returns the final validation loss, or
    raises RunFailed (after the summary) when the run failed."""
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
    out_dir = cfg.run_dir
    if trainer.interrupted_by is not None:  # paused: no summary; the checkpoint is the run's state
        log.warning("%s at step %d; %s", summary["stopped"], summary["step"],
                    f"continue with trainer.resume=true hydra.run.dir={out_dir}" if out_dir else "nothing saved")
        raise SystemExit(128 + int(trainer.interrupted_by))
    val = summary["val_loss"]
    n_params = sum(p.numel() for p in built.model.parameters())  # after plugins changed the structure
    if cfg.trainer["eval_test"] and not summary["failed"]:
        test = trainer.evaluate_split(built.data.test)
        summary.update(test_loss=test.loss, test_loss_se=test.se, test_tokens=test.tokens, test_bpb=test.bpb)
        log.info("test loss %s", test)
    from apt.training.evaluation import describe

    final = "none" if val is None else describe(val, summary["val_loss_se"], summary["val_tokens"],
                                                 summary["val_bpb"])
    failed = f" | FAILED: {summary['failed']}" if summary["failed"] else ""
    if summary["failed"] is None and summary["plugin_errors"]:  # on_plugin_error=warn: trained on without them
        failed = f" | plugin errors: {'; '.join(summary['plugin_errors'])}"
    stopped = summary["stopped"] if summary["stopped"] != summary["failed"] else None
    (log.error if summary["failed"] else log.info)(
        "summary: params %.2fM | steps %d | epochs %d | %.0f tokens/s | final val loss %s | "
        "best val loss %s (step %d, %s periodic tokens) | %.1fs%s%s%s", n_params / 1e6,
        summary["step"], summary["epoch"], summary["tokens_per_s"], final,
        "none" if summary["best_val_loss"] is None else f"{summary['best_val_loss']:.4f}",
        summary["best_step"], f"{summary['best_val_tokens']:,}", wall,
        f" | stopped: {stopped}" if stopped else "", failed, f" | out: {out_dir}" if out_dir else "")
    if out_dir is not None and ctx.is_main:
        import json

        from apt.core.files import atomic_write_text

        atomic_write_text(Path(out_dir) / "summary.json", json.dumps(
            {**summary, "params": n_params, "wall_s": wall}, indent=2, default=str))
    if summary["failed"]:
        raise RunFailed(f"the run failed at step {summary['step']}: {summary['failed']}"
                        + (f"; summary: {Path(out_dir) / 'summary.json'}" if out_dir else ""))
    return float(val)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    from omegaconf import open_dict

    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


# -- helpers ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _hold_run_dirs(checked: CheckedRun, ctx: Any) -> Iterator[None]:
    """The run directory's lock (and the checkpoint directory's, when elsewhere) while training;
    under torchrun rank 0 holds them. A live owner is one ConfigProblems line."""
    from apt.training.runlock import RunDirLocked, RunLock

    run_dir, ckpt_dir = checked.config.run_dir, checked.config.trainer.get("checkpoint_dir")
    dirs = [Path(run_dir)] if run_dir is not None else []
    if ckpt_dir and not any(Path(ckpt_dir).resolve().is_relative_to(d.resolve()) for d in dirs):
        dirs.append(Path(ckpt_dir))
    held: list[RunLock] = []
    try:
        for d in dirs if ctx.is_main else []:
            held.append(RunLock(d).acquire())
        yield
    except RunDirLocked as exc:
        raise ConfigProblems([str(exc)]) from None
    finally:
        for lock in reversed(held):
            lock.release()


@contextlib.contextmanager
def _warnings_logged() -> Iterator[None]:
    """Python warnings raised while the run trains (a provider's fallback) go through logging,
    so they reach the run's train.log and not stderr alone."""
    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        logging.getLogger("py.warnings").warning("%s", text)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


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
