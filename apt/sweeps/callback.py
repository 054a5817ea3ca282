"""The Hydra callback that makes every multirun summarise itself.

Enabled through ``hydra.callbacks`` (``conf/hydra/callbacks/sweep_summary.yaml``). Hydra calls
``on_job_start``/``on_job_end`` inside the job's own process (the main process for the
basic launcher, a worker for joblib, a cluster node for submitit) and
``on_multirun_start``/``on_multirun_end`` in the process that launched the sweep, so each job
writes its own record next to its outputs and the launching process assembles the summary
from files.

The launching process holds the sweep directory's lock (:mod:`apt.training.runlock`) from
``on_multirun_start`` to the end of the sweep: a second sweep into the same directory is one
``error:`` line and exit status 2 before it launches anything, as a second run into a run
directory is. A job that failed for any reason (its config, a run directory in use, an
exception, a failed plugin) is a failed job: the sweep ends with one ``error:`` line per
failed job and one saying how many failed, and exits with ``fail_exit_code``.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import math
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from apt.core.errors import CONFIG_ERROR_EXIT, ConfigProblems
from apt.sweeps.summary import (
    JOB_RECORD,
    METRICS_FILE,
    JobRecord,
    split_records,
    start_sweep,
    sweep_key,
    varying_overrides,
    write_summary,
)
from apt.training.runlock import RunDirLocked, RunLock

__all__ = ["SweepSummaryCallback"]

log = logging.getLogger(__name__)

_LOCK_FILE = ".apt_summary.lock"


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """Serialise summary rewrites: parallel joblib workers finish at the same time."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with (sweep_dir / _LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _recorded_start(job_dir: Path) -> float | None:
    try:
        return JobRecord.load(job_dir / JOB_RECORD).start_time
    except (OSError, ValueError, TypeError):
        return None


def _sweep_dir(config: DictConfig) -> Path:
    """The sweep directory, also from a job that Hydra moved into its own (``hydra.job.chdir``)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
    moved = cwd is not None and Path(str(cwd)) != Path.cwd()
    return Path(str(cwd)) / sweep_dir if moved and not sweep_dir.is_absolute() else sweep_dir


def _is_multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode")
    return mode == RunMode.MULTIRUN or str(mode) == "MULTIRUN"


def _new_sweep_key(config: DictConfig) -> str:
    """What makes this sweep one: a fresh key, except that a study kept in a storage is one
    sweep across the commands that continue it (its trials are numbered across them)."""
    storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
    name = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
    if storage and name:
        return f"study {name} in {storage}"
    return uuid.uuid4().hex


def _error_text(error: BaseException) -> str:
    """A failed job's error in one line: a config problem as its problems, else ``Type: message``."""
    if isinstance(error, ConfigProblems):
        return "; ".join(error.problems)
    return f"{type(error).__name__}: {error}"


def _failed_value(config: DictConfig) -> float:
    """The objective a failed job reports: the worst value for the sweeper's direction.

    Optuna refuses NaN (the whole study stops) but ranks ``inf`` last, so a failed trial
    is kept in the study as the worst one instead of ending the search.
    """
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
    first = direction[0] if isinstance(direction, list | tuple) or OmegaConf.is_list(direction) \
        else direction
    return -math.inf if "max" in str(first).lower() else math.inf


class SweepSummaryCallback(Callback):
    """Write ``summary.csv``, ``summary_grouped.csv``, ``summary.md`` and ``val_loss.png`` for a multirun.

    Args:
        continue_on_failure: a job that raised is recorded with its error and then reported
            to the sweeper as completed with the worst objective value (``inf`` when
            minimising), so the remaining jobs and Optuna trials still run. Hydra alone
            would end the sweep at the first failed batch and never call
            ``on_multirun_end``, leaving no summary.
        fail_exit_code: exit status of the sweep when any job failed (after the summary is
            written), so scripts and CI still notice failures; ``0`` exits normally.
        plot: draw the overlay of validation-loss curves.
        metrics_file: name of the trainer's metrics file inside each job directory.
        baseline: the configuration the others are compared with in ``summary_grouped.csv``,
            by its label or overrides it contains (``provider/attention=sdpa``); None: the
            first. A baseline that matches no configuration (or several) is logged as an
            error and the first configuration is used, so the sweep still gets its summary.
    """

    def __init__(
        self,
        continue_on_failure: bool = True,
        fail_exit_code: int = 1,
        plot: bool = True,
        metrics_file: str = METRICS_FILE,
        baseline: str | None = None,
    ) -> None:
        self.continue_on_failure = continue_on_failure
        self.fail_exit_code = int(fail_exit_code)
        self.plot = plot
        self.metrics_file = metrics_file
        self.baseline = None if baseline is None else str(baseline)
        self._started: dict[str, float] = {}
        self._lock: RunLock | None = None

    # -- in the launching process, before any job ---------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Take the sweep directory (refused when another sweep holds it) and record this sweep."""
        sweep_dir = _sweep_dir(config)
        lock = RunLock(sweep_dir, kind="sweep")
        try:
            lock.acquire()
        except RunDirLocked as exc:
            print(f"error: {exc}", file=sys.stderr)
            # SystemExit passes Hydra's callback guard (it only catches Exception).
            raise SystemExit(CONFIG_ERROR_EXIT) from None
        self._lock = lock
        atexit.register(lock.release)  # a sweep that ends by an exception lets go too
        start_sweep(sweep_dir, _new_sweep_key(config))

    # -- in the job's process --------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        start = time.time()
        self._started[str(job_dir)] = start
        JobRecord(
            job=int(config.hydra.job.num),
            overrides=list(config.hydra.overrides.task),
            sweep=sweep_key(_sweep_dir(config)) or "",
            start_time=start,
            dir=str(job_dir),
        ).save(job_dir)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        start = self._started.pop(str(job_dir), None)
        if start is None:  # another callback instance saw the start (a requeued cluster job)
            start = _recorded_start(job_dir)
        rec = JobRecord(
            job=int(config.hydra.job.num),
            overrides=list(config.hydra.overrides.task),
            sweep=sweep_key(_sweep_dir(config)) or "",
            start_time=start,
            wall_time_s=None if start is None else time.time() - start,
            dir=str(job_dir),
        )
        value = job_return._return_value  # the property would re-raise a failed job's error
        if job_return.status == JobStatus.COMPLETED:
            rec.status = "completed"
            try:
                rec.return_value = float(value)
            except (TypeError, ValueError):
                rec.return_value = None
        else:
            rec.status = "failed"
            if isinstance(value, BaseException):
                rec.error = _error_text(value)
                rec.traceback = "".join(traceback.format_exception(value))
            else:
                rec.error = f"job ended with status {job_return.status.name}"
            # one line: the traceback is kept in the job's record (and named when it may help)
            log.error("job %d (%s) failed: %s%s", rec.job, " ".join(rec.overrides), rec.error,
                      "" if isinstance(value, ConfigProblems) or not rec.traceback
                      else f" (traceback: {job_dir / JOB_RECORD})")
        rec.fill_from_outputs(job_dir, self.metrics_file)
        rec.save(job_dir)
        if rec.status == "failed" and self.continue_on_failure:
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = _failed_value(config)
        sweep_dir = _sweep_dir(config)
        with _locked(sweep_dir):
            write_summary(sweep_dir, final=False, plot=False, metrics_file=self.metrics_file)

    # -- in the launching process, after the last job -----------------------------------------
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = _sweep_dir(config)
        try:
            with _locked(sweep_dir):
                try:
                    paths = write_summary(sweep_dir, final=True, plot=self.plot,
                                          metrics_file=self.metrics_file, baseline=self.baseline)
                except ValueError as exc:  # the baseline: report it, still summarise the sweep
                    log.error("sweep summary: %s; comparing with the first configuration instead", exc)
                    paths = write_summary(sweep_dir, final=True, plot=self.plot,
                                          metrics_file=self.metrics_file)
                records, earlier = split_records(sweep_dir, final=True, metrics_file=self.metrics_file)
        finally:
            if self._lock is not None:
                self._lock.release()
                atexit.unregister(self._lock.release)
                self._lock = None
        # "interrupted": a trial of an earlier, interrupted session (apt.sweeps.optuna_study);
        # that session's exit status reported it
        bad = [r for r in records if r.status not in ("completed", "interrupted")]
        interrupted = sum(r.status == "interrupted" for r in records)
        log.info("sweep summary: %s (%d jobs, %d failed%s)", paths["md"], len(records), len(bad),
                 f", {interrupted} interrupted earlier" if interrupted else "")
        if earlier:
            log.warning("left out %d job records of an earlier sweep in %s", len(earlier), sweep_dir)
        if not bad:
            return
        level = "error" if self.fail_exit_code else "warning"
        for r, label in zip(records, varying_overrides(records), strict=True):  # one line per failed job
            if r in bad:
                error = r.error.splitlines()[0] if r.error else "no error recorded"
                print(f"{level}: job {r.job} ({' '.join(label) or 'no overrides'}) {r.status}: {error}",
                      file=sys.stderr)
        print(f"{level}: {len(bad)} of {len(records)} jobs failed; see {paths['md']}", file=sys.stderr)
        if self.fail_exit_code:
            # SystemExit passes Hydra's callback guard (it only catches Exception).
            raise SystemExit(self.fail_exit_code)
