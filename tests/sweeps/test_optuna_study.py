"""APT's Optuna sweeper: search-space parsing, and studies that persist in sqlite.

The end-to-end tests run a toy Hydra app (no training) with ``hydra/sweeper=optuna`` and the
real sweep_summary callback from conf/, so they take seconds; docs/configuration.md runs
the same with train.py.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna", reason="the optuna extra is not installed (pip install 'apt[optuna]')")

from apt.sweeps.optuna_study import search_space  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import os
    import signal
    import time

    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    def main(cfg):
        if HydraConfig.get().job.num == cfg.kill_at:  # the study's process is stopped in this trial
            os.kill(os.getpid(), getattr(signal, cfg.kill_with))
            time.sleep(60)
        if cfg.fail and cfg.x > 2:
            raise RuntimeError(f"diverged at x={cfg.x}")
        return (cfg.x - 3) ** 2 + cfg.y
    main()
    """
)


def _config(callbacks: bool) -> str:
    return textwrap.dedent(f"""
        defaults:
          {"- override hydra/callbacks: sweep_summary" if callbacks else ""}
          - override hydra/sweeper: optuna
          - _self_
        x: 0
        y: 0.0
        fail: false
        kill_at: -1
        kill_with: SIGKILL
        hydra:
          searchpath: [file://{REPO / "conf"}]
          sweeper:
            params:
              x: range(0, 6)
              y: interval(0.0, 1.0)
        """)


def _study(tmp_path: Path, *overrides: str, callbacks: bool = True) -> subprocess.CompletedProcess:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(_config(callbacks))
    (tmp_path / "app.py").write_text(APP)
    return subprocess.run([sys.executable, "app.py", "-m", "hydra.sweep.dir=study", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)


def test_search_space_follows_hydra_sweep_syntax():
    space, fixed = search_space(["a=choice(1,2,'x')", "b=range(0,10,3)", "c=interval(0.1,0.5)",
                                 "d=tag(log,interval(1e-4,1e-2))", "e=int(interval(1,8))",
                                 "f=range(0.0,1.0,0.25)", "g=7", "a=2"])
    d = optuna.distributions
    assert fixed == {"g": "7", "a": "2"} and "a" not in space  # the command line fixes a
    assert space["b"] == d.IntDistribution(0, 9, step=3)  # Hydra's range: 10 excluded
    assert space["c"] == d.FloatDistribution(0.1, 0.5)
    assert space["d"] == d.FloatDistribution(1e-4, 1e-2, log=True)
    assert space["e"] == d.IntDistribution(1, 8)
    assert space["f"] == d.FloatDistribution(0.0, 0.75, step=0.25)
    with pytest.raises(ValueError, match="empty range"):
        search_space(["b=range(5,5)"])


def test_sqlite_study_continues_with_the_same_command(tmp_path):
    args = ["hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.study_name=s",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0"]
    first = _study(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _study(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing a study of 3 trials: sampler seed 3" in second.stdout + second.stderr
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    # job numbers follow trial numbers, so both sessions' jobs live side by side
    assert {t.user_attrs["job_dir"] for t in trials} == {str(tmp_path / "study" / str(i)) for i in range(6)}
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 3) ** 2 + t.params["y"])
    # the continued session's seed is offset, so it does not replay the first session's draws
    assert [t.params for t in trials[:3]] != [t.params for t in trials[3:]]
    # one study is one sweep: the continued session's summary lists every trial
    assert "6 jobs: 6 completed." in (tmp_path / "study" / "summary.md").read_text()


def test_failed_trials_are_worst_values_with_the_callback_and_fail_without(tmp_path):
    args = ["hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.n_trials=4", "fail=true",
            "x=choice(3,4)", "hydra.sweeper.sampler.seed=1"]
    with_cb = _study(tmp_path, "hydra.sweeper.study_name=cb", *args)
    assert with_cb.returncode == 1  # every trial failed: the callback reports it after the summary
    study = optuna.load_study(study_name="cb", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert all(t.value == float("inf") and t.user_attrs["status"] == "failed" for t in study.trials)
    assert "diverged at x=" in study.trials[0].user_attrs["error"]
    assert (tmp_path / "study" / "summary.md").is_file()

    bare = _study(tmp_path, "hydra.sweeper.study_name=bare", *args, callbacks=False)
    assert bare.returncode == 1
    assert "4 trial(s) failed and were recorded as FAIL" in bare.stdout + bare.stderr
    study = optuna.load_study(study_name="bare", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 4  # every trial still ran


def test_grid_sampler_stops_when_every_point_ran(tmp_path):
    r = _study(tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=50", "x=choice(1,2)",
               "y=range(0.0,1.0,0.5)")
    assert r.returncode == 0, r.stderr[-3000:]
    results = (tmp_path / "study" / "optimization_results.yaml").read_text()
    assert "n_trials: 4" in results and "best_value: 1.0" in results  # x=2, y=0
    assert "the grid is exhausted" in r.stdout + r.stderr


def test_bad_direction_is_one_clear_error(tmp_path):
    r = _study(tmp_path, "hydra.sweeper.direction=minimise")
    assert r.returncode != 0
    assert "hydra.sweeper.direction='minimise': each must be one of ['minimize', 'maximize']" in r.stdout + r.stderr


CALLS: list = []


def records_a_call(*args, **kwargs):
    CALLS.append((args, kwargs))


def test_a_sampler_target_that_is_not_a_sampler_class_is_refused_before_it_is_called():
    from omegaconf import OmegaConf

    from apt.sweeps.optuna_study import OptunaStudySweeper

    sweeper = OptunaStudySweeper(sampler=OmegaConf.create({"_target_": f"{__name__}.records_a_call", "seed": 1}))
    with pytest.raises(ValueError, match=r"hydra.sweeper.sampler._target_='.*records_a_call' is the function "
                                         r".*records_a_call, not an Optuna sampler class"):
        sweeper._sampler(0, {})
    assert CALLS == []
    ok = OptunaStudySweeper(sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 1}))
    assert isinstance(ok._sampler(0, {}), optuna.samplers.RandomSampler)


STORED = ["hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.study_name=s", "hydra.sweeper.sampler.seed=0"]


def _load(tmp_path: Path) -> Any:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")


def _summary(tmp_path: Path) -> dict[str, dict[str, str]]:
    with (tmp_path / "study" / "summary.csv").open(newline="") as fh:
        return {row["job"]: row for row in csv.DictReader(fh)}


def test_a_trial_left_running_by_a_killed_study_is_failed_when_the_study_continues(tmp_path):
    killed = _study(tmp_path, *STORED, "hydra.sweeper.n_trials=3", "kill_at=1")  # kill -9 in trial 1
    assert killed.returncode == -signal.SIGKILL
    assert [t.state.name for t in _load(tmp_path).trials] == ["COMPLETE", "RUNNING"]
    again = _study(tmp_path, *STORED, "hydra.sweeper.n_trials=2")
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    trials = _load(tmp_path).trials
    assert f"trial 1 was left RUNNING by process {trials[1].user_attrs['apt_owner']['pid']} " in log, log[-3000:]
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # 2 more ran
    assert trials[1].user_attrs["status"] == "failed" and "ended" in trials[1].user_attrs["error"]
    jobs = _summary(tmp_path)
    assert jobs["1"]["status"] == "interrupted" and jobs["1"]["error"] == trials[1].user_attrs["error"]
    assert [jobs[j]["status"] for j in "023"] == ["completed"] * 3


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_marks_the_running_trial_failed_before_the_study_exits(signame, tmp_path):
    stopped = _study(tmp_path, *STORED, "hydra.sweeper.n_trials=3", "kill_at=1", f"kill_with={signame}")
    log = stopped.stdout + stopped.stderr
    assert stopped.returncode == 128 + getattr(signal, signame), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert f"interrupted: {signame}; trial 1 marked FAIL" in log, log[-3000:]
    trials = _load(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[1].user_attrs["error"] == f"interrupted by {signame}"
    if signame == "SIGTERM":
        again = _study(tmp_path, *STORED, "hydra.sweeper.n_trials=1")
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        assert "left RUNNING" not in again.stdout + again.stderr
        assert [t.state.name for t in _load(tmp_path).trials] == ["COMPLETE", "FAIL", "COMPLETE"]
        assert _summary(tmp_path)["1"]["status"] == "interrupted"


def test_running_trials_of_live_or_unknown_processes_are_left_alone(tmp_path):
    from apt.sweeps.optuna_study import OWNER_ATTR, trial_owner

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    ended = subprocess.Popen(["true"])
    ended.wait()
    owners = {"live": trial_owner(), "other host": {**trial_owner(), "host": "elsewhere"}, "unknown": None,
              "ended": {**trial_owner(), "pid": ended.pid}}
    for owner in owners.values():
        trial = study.ask()
        if owner is not None:
            trial.set_user_attr(OWNER_ATTR, owner)
    r = _study(tmp_path, *STORED, "hydra.sweeper.n_trials=1")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert f"trial 3 was left RUNNING by process {ended.pid}" in log and "trial 0 was" not in log
    assert [t.state.name for t in _load(tmp_path).trials] == ["RUNNING"] * 3 + ["FAIL", "COMPLETE"]
