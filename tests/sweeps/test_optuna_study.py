"""APT's Optuna sweeper: search-space parsing, and studies that persist in sqlite.

The end-to-end tests run a toy Hydra app (no training) with ``hydra/sweeper=optuna`` and the
real sweep_summary callback from conf/, so they take seconds; docs/configuration.md runs
the same with train.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="the optuna extra is not installed (pip install 'apt[optuna]')")

from apt.sweeps.optuna_study import search_space  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import hydra

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    def main(cfg):
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
