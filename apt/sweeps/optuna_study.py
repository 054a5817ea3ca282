"""An Optuna study whose trials are Hydra jobs: the engine of ``hydra/sweeper=optuna``.

Each trial is asked from the study, turned into command-line overrides, run by the
configured launcher as job number ``trial.number``, and told its result. With
``storage`` (``sqlite:///study.db``) and ``study_name`` the study lives in a database:
the same command run again continues it with ``n_trials`` more trials, and several
processes may work on one study at once.

Search space (``params`` and sweep overrides on the command line, Hydra's syntax):
``choice(a, b)`` is categorical; ``interval(lo, hi)`` is a float, ``int(interval(lo, hi))``
an int, ``tag(log, interval(...))`` on a log scale; ``range(start, stop[, step])`` is Hydra's
range, ``stop`` excluded, as a stepped int (or float); a plain value is fixed for every trial.

Failures: APT's sweep_summary callback turns a failed job into a completed one worth the
worst value (``inf`` when minimising) and records the error, so the study goes on and the
sampler learns to avoid that region; each such trial also carries the user attributes
``status=failed`` and ``error``. A job that failed without that callback is told to Optuna as
FAIL, the remaining trials still run, and the sweep raises at the end.

Interrupts: each trial records the process that runs it (user attribute ``apt_owner``:
host, pid, pid namespace, process start time). SIGINT or SIGTERM ends the study with the
trials in flight told as FAIL (``error``: ``interrupted by SIGTERM``), one ``interrupted:``
line and exit status ``128 + signal``, as an interrupted ``train.py``. A process killed
outright cannot do that; when the study continues, a trial still RUNNING whose owner has
ended on this host is told as FAIL with a warning, and the study goes on. A RUNNING trial of
a live process, of another host or with no recorded owner is left alone: it may be a
concurrent worker's. Either way the trial's job record in the sweep directory becomes
``interrupted`` (not a failure of the session that continues the study).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from apt.sweeps.summary import JOB_RECORD, JobRecord

__all__ = ["DIRECTIONS", "OWNER_ATTR", "OptunaStudySweeper", "search_space", "trial_owner"]

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
RESULTS_FILE = "optimization_results.yaml"
#: Trial user attribute naming the process that runs the trial (:func:`trial_owner`).
OWNER_ATTR = "apt_owner"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ImportError("hydra/sweeper=optuna needs Optuna: pip install 'apt[optuna]'") from None
    return optuna


def _proc(pid: int, what: str) -> str | None:
    """A process's ``stat`` or ``ns/pid`` from /proc; None where there is no /proc or no such process."""
    path = Path(f"/proc/{pid}/{what}")
    try:
        return os.readlink(path) if what.startswith("ns/") else path.read_text(encoding="ascii")
    except OSError:
        return None


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot): tells a reused pid from its first owner."""
    stat = _proc(pid, "stat")
    return None if stat is None else int(stat[stat.rindex(")") + 2:].split()[19])


def trial_owner() -> dict[str, Any]:
    """This process, as recorded in a trial it runs (:data:`OWNER_ATTR`)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pidns": _proc(pid, "ns/pid"), "pid": pid, "start": _started(pid)}


def _owner_ended(owner: Any) -> bool | None:
    """Whether the process recorded by :func:`trial_owner` has ended; None: cannot tell here
    (no record, another host, another pid namespace)."""
    here = trial_owner()
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) \
            or (owner.get("host"), owner.get("pidns")) != (here["host"], here["pidns"]):
        return None
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists
        pass
    started = _started(owner["pid"])
    return owner.get("start") is not None and started is not None and started != owner["start"]  # pid reused


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` (Python would end at once, leaving trials RUNNING);
    SIGINT already raises KeyboardInterrupt. ``train.py``'s trainer installs its own handlers
    while it fits and restores this one after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(distributions, fixed)`` from overrides: Optuna distributions by key, fixed values as text."""
    dist = _optuna().distributions
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        value = override.value()
        if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            distributions[key] = dist.CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step
            count = math.ceil((stop - start) / step)
            if count < 1:
                raise ValueError(f"{key}: {override.input_line!r} is an empty range")
            last = start + (count - 1) * step
            if all(isinstance(v, int) for v in (start, stop, step)):
                distributions[key] = dist.IntDistribution(int(start), int(last), step=int(step))
            else:
                distributions[key] = dist.FloatDistribution(float(start), float(last), step=float(step))
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                distributions[key] = dist.IntDistribution(value.start, value.end, log=log_scale)
            else:
                distributions[key] = dist.FloatDistribution(float(value.start), float(value.end),
                                                             log=log_scale)
        else:
            raise ValueError(f"{key}: the optuna sweeper cannot search {override.input_line!r}; "
                             "use choice(...), range(...), interval(...) or tag(log, interval(...))")
    for key in fixed:
        distributions.pop(key, None)  # the command line fixes what params would search
    return distributions, fixed


def _grid(distributions: Mapping[str, Any]) -> dict[str, list[Any]]:
    """GridSampler's search space: every value of each (discrete) distribution."""
    dist = _optuna().distributions
    grid = {}
    for key, d in distributions.items():
        if isinstance(d, dist.CategoricalDistribution):
            grid[key] = list(d.choices)
        elif isinstance(d, dist.IntDistribution) and not d.log:
            grid[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, dist.FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            grid[key] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise ValueError(f"{key}: the grid sampler needs choice(...) or range(...), not {d}")
    return grid


class OptunaStudySweeper:
    """Asks trials, launches them as Hydra jobs, tells Optuna their values; see the module doc."""

    def __init__(self, *, sampler: DictConfig, direction: Any = "minimize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 1,
                 params: Mapping[str, str] | None = None, custom_search_space: str | None = None) -> None:
        directions = list(direction) if OmegaConf.is_list(direction) or isinstance(direction, list | tuple) \
            else [direction]
        bad = [d for d in directions if str(d) not in DIRECTIONS]
        if bad or not directions:
            raise ValueError(f"hydra.sweeper.direction={direction!r}: each must be one of {list(DIRECTIONS)}")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must be positive")
        self.sampler_cfg = sampler
        self.directions = [str(d) for d in directions]
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.params = dict(params or {})
        self.extend_space = get_method(custom_search_space) if custom_search_space else None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    # -- the study ------------------------------------------------------------------------
    def _sampler(self, n_existing: int, distributions: Mapping[str, Any]) -> Any:
        """The configured sampler; a continued study's seed is offset by its trial count.

        Without the offset, a seeded sampler would repeat the first session's random draws.
        The ``_target_`` is checked to be a sampler class before it is called.
        """
        from apt.checks.targets import class_problem

        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
        assert isinstance(cfg, dict)
        problem = class_problem(str(cfg.get("_target_")), "optuna.samplers._base:BaseSampler",
                                "an Optuna sampler class (a subclass of optuna.samplers.BaseSampler)")
        if problem:
            raise ValueError(f"hydra.sweeper.sampler._target_={problem}")
        if cfg.get("seed") is not None and n_existing:
            cfg["seed"] = int(cfg["seed"]) + n_existing
            log.info("continuing a study of %d trials: sampler seed %d", n_existing, cfg["seed"])
        if cfg["_target_"] == "optuna.samplers.GridSampler":
            cfg["search_space"] = _grid(distributions)
        try:
            return instantiate(cfg)
        except Exception as exc:  # noqa: BLE001 - e.g. CmaEsSampler without the cmaes package
            raise ValueError(f"hydra.sweeper.sampler ({cfg['_target_']}): {exc}") from exc

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        optuna = _optuna()
        distributions, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        study = optuna.create_study(storage=self.storage, study_name=self.study_name,
                                    directions=self.directions, load_if_exists=True)
        self._fail_abandoned(study)
        study.sampler = self._sampler(len(study.trials), distributions)
        grid = isinstance(study.sampler, optuna.samplers.GridSampler)
        log.info("study %r (%s): %d trials so far, running %d more with %s, %s",
                 study.study_name, self.storage or "in memory", len(study.trials), self.n_trials,
                 type(study.sampler).__name__, "/".join(self.directions))
        failures: list[str] = []
        left = self.n_trials
        running: list[Any] = []  # asked, not yet told
        try:
            with _sigterm_exits():
                while left > 0:
                    for _ in range(min(self.n_jobs, left)):
                        if grid and study.sampler.is_exhausted(study):
                            break
                        running.append(self._ask(study, distributions, fixed))
                    if not running:
                        log.info("the grid is exhausted")
                        break
                    overrides = [tuple(f"{k}={v}" for k, v in {**t.params, **fixed}.items()) for t in running]
                    for trial, ret in zip(list(running), self._launch(running, overrides), strict=True):
                        error = self._tell(study, trial, ret)
                        running.remove(trial)
                        if error:
                            failures.append(f"trial {trial.number}: {error}")
                    left -= len(overrides)
        except BaseException as exc:
            signame = _interrupt(exc)
            why = f"interrupted by {signame}" if signame else f"the sweep stopped: {type(exc).__name__}: {exc}"
            for trial in running:
                self._fail_trial(study, trial, why)
            if signame is None:
                raise
            log.warning("interrupted: %s; %s; run the same command to continue the study", signame,
                        f"trial {', '.join(str(t.number) for t in running)} marked FAIL" if running
                        else "no trial was running")
            raise SystemExit(128 + signal.Signals[signame]) from None
        self._write_results(study)
        if failures:
            raise RuntimeError(f"{len(failures)} trial(s) failed and were recorded as FAIL: "
                               + "; ".join(failures))
        return study

    def _fail_abandoned(self, study: Any) -> None:
        """Tell Optuna as FAIL each trial left RUNNING by a process of this host that has ended."""
        state = _optuna().trial.TrialState
        for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
            owner = trial.user_attrs.get(OWNER_ATTR)
            ended = _owner_ended(owner)
            if ended:
                log.warning("trial %d was left RUNNING by process %d on %s, which has ended: marked FAIL",
                            trial.number, owner["pid"], owner["host"])
                self._fail_trial(study, trial, f"its process ({owner['pid']} on {owner['host']}) "
                                               "ended while it ran")
            elif ended is None:
                log.info("trial %d is RUNNING in %s: left alone", trial.number,
                         f"process {owner['pid']} on {owner['host']}" if isinstance(owner, dict) else
                         "a process that did not record itself")

    def _fail_trial(self, study: Any, trial: Any, error: str) -> None:
        """Tell ``trial`` (a Trial or FrozenTrial) as FAIL with ``error``, and mark its job
        record ``interrupted``."""
        optuna = _optuna()
        number = trial.number
        try:
            live = trial if isinstance(trial, optuna.trial.Trial) else \
                optuna.trial.Trial(study, trial._trial_id)  # a FrozenTrial has no setters
            live.set_user_attr("status", "failed")
            live.set_user_attr("error", error)
            study.tell(live, state=optuna.trial.TrialState.FAIL)
        except RuntimeError as exc:  # another process finished it meanwhile
            log.info("trial %d: %s", number, exc)
            return
        assert self.config is not None
        for path in Path(str(self.config.hydra.sweep.dir)).rglob(JOB_RECORD):
            record = _job_record(path.parent)
            if record is not None and record.job == number and record.status == "running":
                record.status, record.error = "interrupted", error
                record.save(path.parent)

    def _ask(self, study: Any, distributions: Mapping[str, Any], fixed: Mapping[str, str]) -> Any:
        trial = study.ask(fixed_distributions=dict(distributions))
        trial.set_user_attr(OWNER_ATTR, trial_owner())
        for key, value in fixed.items():
            trial.set_user_attr(key, value)
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
        overlap = sorted(set(trial.params) & set(fixed))
        if overlap:
            raise ValueError(f"custom_search_space suggests fixed parameters {overlap}")
        return trial

    def _launch(self, trials: Sequence[Any], overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
        """Run the jobs, numbered by trial, so a sweep directory shared by sessions keeps every trial."""
        numbers = [t.number for t in trials]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(overrides, initial_job_idx=numbers[0]))
        # another process asked trials in between: launch one by one to keep the numbering
        return [r for n, o in zip(numbers, overrides, strict=True)
                for r in self.launcher.launch([o], initial_job_idx=n)]

    def _tell(self, study: Any, trial: Any, ret: JobReturn) -> str | None:
        """Tell Optuna the job's value(s); returns the error of a trial told as FAIL."""
        state = _optuna().trial.TrialState
        job_dir = _job_dir(ret)
        if job_dir is not None:
            trial.set_user_attr("job_dir", str(job_dir))
            record = _job_record(job_dir)
            if record is not None and record.status == "failed":
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("error", record.error[:1000])
        error = None
        values = None
        if ret.status != JobStatus.COMPLETED:
            value = ret._return_value  # the property would re-raise the job's exception
            error = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else \
                f"job ended with status {ret.status.name}"
        else:
            try:
                raw = ret.return_value
                values = [float(v) for v in (raw if len(self.directions) > 1 else [raw])]
                if len(values) != len(self.directions):
                    error = f"returned {len(values)} values for {len(self.directions)} objectives"
            except (TypeError, ValueError):
                error = f"returned {ret.return_value!r}, not a number"
        if error is not None:
            trial.set_user_attr("error", error[:1000])
            log.error("trial %d failed: %s", trial.number, error)
            study.tell(trial, state=state.FAIL)
            return error
        try:
            study.tell(trial, values)
        except RuntimeError as exc:  # a grid sampler's study.stop() outside optimize()
            if "Study.stop" not in str(exc):
                raise
        return None

    def _write_results(self, study: Any) -> None:
        assert self.config is not None
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                                   "storage": self.storage, "n_trials": len(study.trials),
                                   "n_complete": len(complete)}
        if not complete:
            log.error("no trial of study %r completed", study.study_name)
        elif len(self.directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("best value %s (trial %d): %s", best.value, best.number, best.params)
        else:
            results["solutions"] = [{"params": t.params, "values": t.values, "trial": t.number}
                                    for t in study.best_trials]
            log.info("%d Pareto-optimal trials", len(results["solutions"]))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)


def _interrupt(exc: BaseException) -> str | None:
    """The signal an exception stands for: ``SIGINT`` for KeyboardInterrupt, ``SIGTERM`` for
    ``SystemExit(143)`` (how train.py and :func:`_sigterm_exits` end); None for any other."""
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code > 128:
        with contextlib.suppress(ValueError):
            return signal.Signals(exc.code - 128).name
    return None


def _job_dir(ret: JobReturn) -> Path | None:
    out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    return Path(str(out)) if out else None


def _job_record(job_dir: Path) -> JobRecord | None:
    try:
        return JobRecord.load(job_dir / JOB_RECORD)
    except (OSError, ValueError, TypeError):
        return None
