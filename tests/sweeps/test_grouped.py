"""Grouping a sweep's jobs over seeds: rows, blanks, failures, baselines, the table and plot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from matplotlib.image import imread

from apt.sweeps import GROUPED_COLUMNS, JobRecord, grouped_stats, write_summary
from apt.sweeps.stats import mean_ci, paired_t

JOBS = [  # (job, overrides, status, final val loss): three configurations, seeds 1-3
    (0, ["model=tiny", "x=a", "seed=1"], "completed", 1.50),
    (1, ["model=tiny", "x=a", "seed=2"], "completed", 1.48),
    (2, ["model=tiny", "x=a", "seed=3"], "completed", 1.52),
    (3, ["model=tiny", "x=b", "seed=1"], "completed", 1.55),
    (4, ["model=tiny", "x=b", "seed=2"], "completed", 1.50),
    (5, ["model=tiny", "x=b", "seed=3"], "failed", None),
    (6, ["model=tiny", "x=c", "seed=2"], "completed", 1.40),
]


def test_configurations_pair_seeds_and_leave_failures_out():
    a, b, c = grouped_stats(JOBS)
    assert [g.config for g in (a, b, c)] == ["x=a", "x=b", "x=c"]  # what sets them apart
    assert a.baseline and (a.n, b.n, c.n) == (3, 2, 1) and (b.failed, a.failed) == (1, 0)
    mean, ci = mean_ci([1.50, 1.48, 1.52])
    assert (a.val_loss_mean, a.val_loss_ci95) == (pytest.approx(mean), pytest.approx(ci))
    assert a.delta_vs_baseline is None and a.p_value is None  # the baseline itself
    test = paired_t([1.55, 1.50], [1.50, 1.48])  # seeds 1 and 2: seed 3 of x=b failed
    assert b.pairs == 2 and b.delta_vs_baseline == pytest.approx(test.mean_diff)
    assert (b.delta_ci95, b.p_value) == (pytest.approx(test.ci), pytest.approx(test.p_value))
    # n = 1: a mean, and blanks where a spread is needed
    assert c.val_loss_mean == 1.40 and c.val_loss_ci95 is None
    assert c.delta_vs_baseline == pytest.approx(1.40 - 1.48) and (c.delta_ci95, c.p_value) == (None, None)


def test_baseline_is_chosen_by_name():
    groups = grouped_stats(JOBS, baseline="x=b")
    assert [g.baseline for g in groups] == [False, True, False]
    assert groups[0].delta_vs_baseline == pytest.approx(-((1.55 - 1.50) + (1.50 - 1.48)) / 2)
    with pytest.raises(ValueError, match=r"baseline 'x=z' matches no configuration; configurations: \['x=a'"):
        grouped_stats(JOBS, baseline="x=z")
    with pytest.raises(ValueError, match="matches 3 configurations"):
        grouped_stats(JOBS, baseline="model=tiny")


def test_seed_only_sweep_is_one_configuration():
    (g,) = grouped_stats([(0, ["seed=1"], "completed", 2.0), (1, ["seed=2"], "completed", 3.0)])
    assert g.config == "(base)" and g.n == 2 and g.val_loss_ci95 is not None


def _write_jobs(root: Path, curve_points: int) -> None:
    for job, overrides, status, loss in JOBS:
        d = root / str(job)
        d.mkdir()
        steps = range(10, 10 * curve_points + 1, 10)
        rows = "".join(f"{s},{3.0 - s / 100},{(loss or 2.0) + 1 / s}\n" for s in steps)
        (d / "metrics.csv").write_text("step,train_loss,val_loss\n" + rows)
        rec = JobRecord(job=job, overrides=overrides, status=status, return_value=loss,
                        error="" if loss else "RuntimeError: diverged")
        rec.fill_from_outputs(d)
        rec.save(d)


def test_summary_files_hold_the_grouped_table_with_blanks(tmp_path):
    _write_jobs(tmp_path, curve_points=4)
    paths = write_summary(tmp_path)
    with paths["grouped"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(GROUPED_COLUMNS)
    assert [(r["config"], r["n"]) for r in rows] == [("x=a", "3"), ("x=b", "2"), ("x=c", "1")]
    assert float(rows[1]["p_value"]) == pytest.approx(paired_t([1.55, 1.50], [1.50, 1.48]).p_value)
    assert rows[2]["val_loss_ci95"] == rows[2]["delta_ci95"] == rows[2]["p_value"] == ""
    assert rows[0]["delta_vs_baseline"] == ""  # the baseline
    md = paths["md"].read_text()
    assert "| x=b | 2 (+1 failed) | 1.5250 |" in md and "paired t-test" in md
    assert "| x=a **(baseline)** | 3 | 1.5000 | 0.0497 |  |  |  |" in md
    assert "| 5 | model=tiny x=b seed=3 | failed |" in md  # still a row of the job table
    assert imread(paths["plot"]).shape[1] == 13 * 110  # curves and finals side by side


def test_jobs_with_one_evaluation_are_plotted_as_finals(tmp_path):
    _write_jobs(tmp_path, curve_points=1)  # e.g. 30 steps with eval_every=200: the final evaluation
    plot = write_summary(tmp_path)["plot"]
    assert imread(plot).shape[1] == 8 * 110  # the finals panel alone
