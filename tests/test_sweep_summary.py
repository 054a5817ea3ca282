"""The multirun summary: records, the summary writer, and the Hydra callback end to end.

The end-to-end tests run a toy Hydra app (it writes a metrics.csv like the trainer's and
can be told to fail) with the real ``conf/hydra/callbacks/sweep_summary.yaml``, so they test
the callback under each launcher without training a model.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from apt.sweeps import (
    JOB_RECORD,
    SUMMARY_COLUMNS,
    JobRecord,
    collect_records,
    read_metrics,
    varying_overrides,
    write_summary,
)
from tests.helpers import CONF

TOY_APP = textwrap.dedent(
    """
    import csv, os, time, hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    def main(cfg):
        deadline = time.time() + 120
        while cfg.wait_for and not os.path.exists(cfg.wait_for) and time.time() < deadline:
            time.sleep(0.05)
        rows = []
        for step in range(1, cfg.steps + 1):
            val = 2.0 / (step * cfg.lr) if step % 2 == 0 else ""
            rows.append({"step": step, "train_loss": 3.0 / step, "val_loss": val,
                         "tokens_per_s": 1000.0 * step})
        out = HydraConfig.get().runtime.output_dir
        with open(os.path.join(out, "metrics.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        if cfg.fail:
            raise RuntimeError(f"diverged at lr={cfg.lr}")
        return 2.0 / (cfg.steps * cfg.lr)

    if __name__ == "__main__":
        main()
    """
)

TOY_CONFIG = textwrap.dedent(
    f"""
    defaults:
      - override hydra/callbacks: sweep_summary
      - _self_
    lr: 1.0
    steps: 6
    fail: false
    wait_for: ""
    hydra:
      searchpath: [file://{CONF}]
    """
)


def _toy_command(tmp_path: Path, *overrides: str) -> tuple[list[str], Path]:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(TOY_CONFIG)
    (tmp_path / "app.py").write_text(TOY_APP)
    sweep = tmp_path / "multirun"
    return [sys.executable, "app.py", "-m", f"hydra.sweep.dir={sweep}", *overrides], sweep


def _run_toy(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    command, sweep = _toy_command(tmp_path, *overrides)
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240), sweep


def _summary_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_read_metrics_takes_curve_steps_and_steady_throughput(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("step,train_loss,val_loss,tokens_per_s\n"
                 "1,3.0,,10\n2,2.5,2.0,100\n3,2.0,,300\n4,1.8,1.5,200\n")
    m = read_metrics(p)
    assert m["steps"] == 4
    assert m["val_curve"] == [(2, 2.0), (4, 1.5)]
    assert m["tokens_per_s"] == 200  # median of 100, 300, 200: the first (warm-up) row is skipped
    assert m["train_curve"] == [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.8)]
    assert read_metrics(tmp_path / "missing.csv") == {"steps": None, "tokens_per_s": None,
                                                      "val_curve": [], "final_evals": [], "train_curve": []}


# The trainer's periodic evaluations score a fixed subset of windows (512 tokens here); its final
# evaluation scores the whole split (1999 tokens), and summary.json's best_val_loss is the periodic
# subset's best, the final evaluation's share of those windows included (1.38 here).
TRAINER_METRICS = ("step,train_loss,val_loss,val_tokens\n1,3.0,,\n2,2.0,1.5,512\n3,1.8,,\n"
                   "4,1.6,1.4,512\n6,1.3,1.2,1999\n")
TRAINER_SUMMARY = {"step": 6, "val_loss": 1.2, "val_tokens": 1999, "best_val_loss": 1.38, "best_step": 6,
                   "best_val_tokens": 512}


def test_best_val_loss_compares_periodic_subsets_never_the_whole_split_final(tmp_path):
    (tmp_path / "metrics.csv").write_text(TRAINER_METRICS)
    failed = JobRecord(job=1, overrides=["a=1"], status="failed")  # died before summary.json
    failed.fill_from_outputs(tmp_path)
    assert failed.val_curve == [(2, 1.5), (4, 1.4)]  # the periodic rows only
    assert failed.final_evals == [(6, 1.2)]  # the whole-split row, kept apart
    assert failed.best_val_loss == 1.4  # not 1.2: that one scored other windows
    (tmp_path / "summary.json").write_text(json.dumps(TRAINER_SUMMARY))
    done = JobRecord(job=0, overrides=["a=1"], status="completed", return_value=1.2)
    done.fill_from_outputs(tmp_path)
    assert (done.final_val_loss, done.best_val_loss) == (1.2, 1.38)  # the trainer's like-with-like best
    done.save(tmp_path)
    write_summary(tmp_path, plot=False)
    assert _summary_rows(tmp_path)[0]["best_val_loss"] == "1.38"
    assert "best_val_loss" in (tmp_path / "summary.md").read_text().split("## Jobs")[1].split("|")[0]


def test_a_directory_without_jobs_is_summarised_as_empty(tmp_path):
    assert write_summary(tmp_path)["md"].read_text().startswith(f"# Sweep summary: {tmp_path}\n\n0 jobs")
    assert _summary_rows(tmp_path) == []


def test_val_loss_plot_marks_the_whole_split_final_apart_from_the_periodic_curve(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed (pip install 'apt[plot]')")
    import matplotlib.pyplot as plt

    from apt.sweeps.plot import FINAL_MARKER

    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.csv").write_text(TRAINER_METRICS)
        (d / "summary.json").write_text(json.dumps(TRAINER_SUMMARY))
        JobRecord(job=i, overrides=[f"seed={i}"], status="completed", return_value=1.2).save(d)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert write_summary(tmp_path)["plot"].stat().st_size > 0
    curves = figures[0].axes[0]
    lines = {line.get_label(): line for line in curves.get_lines()}
    mean = next(line for label, line in lines.items() if label.startswith("(base)"))
    assert list(mean.get_xdata()) == [2, 4]  # the curve: periodic evaluations only
    stars = [line for line in curves.get_lines() if list(line.get_xdata()) == [6]]
    assert (FINAL_MARKER, [1.2]) in [(line.get_marker(), list(line.get_ydata())) for line in stars]
    assert FINAL_MARKER != mean.get_marker()
    assert any(label.startswith("final evaluation (by default the whole split") for label in lines)


def test_val_loss_plot_zooms_to_include_the_final_evaluation(tmp_path, monkeypatch):
    """A final evaluation far below the periodic band stays inside the axes' y range."""
    pytest.importorskip("matplotlib", reason="the plot extra is not installed (pip install 'apt[plot]')")
    import matplotlib.pyplot as plt

    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.csv").write_text(TRAINER_METRICS.replace("6,1.3,1.2,1999", "6,1.3,0.6,1999"))
        (d / "summary.json").write_text(json.dumps({**TRAINER_SUMMARY, "val_loss": 0.6}))
        JobRecord(job=i, overrides=[f"seed={i}"], status="completed", return_value=0.6).save(d)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    write_summary(tmp_path)
    low, high = figures[0].axes[0].get_ylim()
    assert low < 0.6 < high


def test_record_prefers_return_value_and_tracks_best(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,val_loss\n1,3.0\n2,1.0\n3,2.0\n")
    rec = JobRecord(job=0, overrides=["a=1"], status="completed", return_value=1.9)
    rec.fill_from_outputs(tmp_path)
    assert rec.final_val_loss == 1.9 and rec.best_val_loss == 1.0 and rec.steps == 3
    # The app's summary.json, written when training ends, wins for steps and throughput.
    (tmp_path / "summary.json").write_text('{"step": 4, "tokens_per_s": 123.5, "val_loss": 0.9,'
                                           ' "best_val_loss": 0.8}')
    rec.fill_from_outputs(tmp_path)
    assert (rec.steps, rec.tokens_per_s, rec.final_val_loss, rec.best_val_loss) == (4, 123.5, 1.9, 0.8)
    rec.save(tmp_path)
    assert JobRecord.load(tmp_path / JOB_RECORD) == rec


def test_write_summary_reports_failed_and_dead_jobs(tmp_path):
    for i, (status, ov) in enumerate([("completed", "x=1"), ("failed", "x=2"), ("running", "x=3")]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.csv").write_text("step,val_loss\n1,2.0\n2,1.5\n")
        rec = JobRecord(job=i, overrides=[ov, "seed=1"], status=status,
                        return_value=1.5 if status == "completed" else None,
                        error="ValueError: boom" if status == "failed" else "")
        rec.fill_from_outputs(d)
        rec.save(d)
    paths = write_summary(tmp_path)
    rows = _summary_rows(tmp_path)
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["status"] for r in rows] == ["completed", "failed", "incomplete"]
    assert rows[1]["error"] == "ValueError: boom"
    assert rows[0]["final_val_loss"] == "1.5" and rows[0]["dir"] == "0"
    md = paths["md"].read_text()
    assert "1 completed, 1 failed, 1 incomplete" in md and "ValueError: boom" in md
    assert paths["plot"].stat().st_size > 0 and "![validation loss per configuration](val_loss.png)" in md
    assert varying_overrides(collect_records(tmp_path)) == [["x=1"], ["x=2"], ["x=3"]]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_with_a_failing_job_still_leaves_a_complete_summary(tmp_path, launcher):
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc, sweep = _run_toy(tmp_path, "lr=1.0,2.0", "fail=false,true", *extra)
    # Every job ran (the failure did not end the sweep); the sweep still reports failure.
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = _summary_rows(sweep)
    assert len(rows) == 4
    by_ov = {r["overrides"]: r for r in rows}
    ok = by_ov["lr=2.0 fail=False"]
    assert ok["status"] == "completed"
    assert float(ok["final_val_loss"]) == pytest.approx(2.0 / 12)
    assert float(ok["best_val_loss"]) == pytest.approx(2.0 / 12)
    assert ok["steps"] == "6" and float(ok["wall_time_s"]) >= 0
    assert float(ok["tokens_per_s"]) == pytest.approx(4000.0)  # median of rows 2..6
    bad = by_ov["lr=1.0 fail=True"]
    assert bad["status"] == "failed"
    assert bad["error"] == "RuntimeError: diverged at lr=1.0"
    assert float(bad["best_val_loss"]) == pytest.approx(2.0 / 6)  # curve logged before the error
    md = (sweep / "summary.md").read_text()
    assert "4 jobs: 2 completed, 2 failed." in md
    assert (sweep / "val_loss.png").stat().st_size > 0
    record = json.loads((sweep / "1" / JOB_RECORD).read_text())
    assert "RuntimeError" in record["traceback"]


def test_sweep_without_failures_exits_zero_and_single_runs_write_nothing(tmp_path):
    proc, sweep = _run_toy(tmp_path, "lr=1.0,4.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _summary_rows(sweep)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    run = subprocess.run([sys.executable, "app.py", "hydra.run.dir=single"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (tmp_path / "single" / JOB_RECORD).exists()


def test_failed_job_reports_worst_value_to_optuna(tmp_path):
    # The sweeper must keep going: the failed trial is told as +inf (minimise).
    proc, sweep = _run_toy(
        tmp_path, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=0", "lr=choice(1.0,2.0)",
        "fail=choice(true,false)",
    )
    rows = _summary_rows(sweep)
    assert len(rows) == 3, proc.stderr[-3000:]
    statuses = [r["status"] for r in rows]
    assert "failed" in statuses[:-1], statuses  # trials went on after a failure
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [float(r["final_val_loss"]) for r in rows if r["status"] == "completed"]
    assert results["best_value"] == pytest.approx(min(completed))


def test_a_second_sweep_into_a_live_sweeps_directory_is_refused_up_front(tmp_path):
    # Sweep A waits in its first job until told to go; sweep B, started into A's directory
    # meanwhile, must be refused before it launches anything (they used to mix silently).
    command, sweep = _toy_command(tmp_path, "lr=1.0,2.0", f"wait_for={tmp_path / 'go'}")
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (sweep / "0" / JOB_RECORD).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (sweep / "0" / JOB_RECORD).exists(), first.communicate()
        second = subprocess.run([*_toy_command(tmp_path, "lr=4.0,8.0")[0]], cwd=tmp_path, capture_output=True,
                                text=True, timeout=240)
        (tmp_path / "go").touch()
        out, err = first.communicate(timeout=240)
    finally:
        first.kill()
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"the sweep directory {str(sweep)!r} is in use by pid {first.pid}" in errors[0]
    assert "Traceback" not in second.stderr and "Launching" not in second.stdout + second.stderr
    assert first.returncode == 0, err[-3000:]
    assert [r["overrides"].split()[0] for r in _summary_rows(sweep)] == ["lr=1.0", "lr=2.0"]  # A's jobs only
    assert not (sweep / ".apt.lock").exists()  # released when A ended


def test_a_later_sweep_into_the_same_directory_lists_only_its_own_jobs(tmp_path):
    first, sweep = _run_toy(tmp_path, "lr=1.0,2.0,4.0")
    assert first.returncode == 0, first.stderr[-3000:]
    second, _ = _run_toy(tmp_path, "lr=8.0")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [(r["job"], r["overrides"]) for r in _summary_rows(sweep)] == [("0", "lr=8.0")]
    md = (sweep / "summary.md").read_text()
    assert "1 jobs: 1 completed." in md and "2 job records of an earlier sweep" in md
    assert "left out 2 job records of an earlier sweep" in second.stdout + second.stderr


def test_failed_jobs_end_the_sweep_in_one_line_each_and_a_count(tmp_path):
    proc, sweep = _run_toy(tmp_path, "lr=1.0,2.0", "fail=false,true")
    assert proc.returncode == 1
    last = proc.stderr.rstrip().splitlines()[-3:]
    assert last[0].startswith("error: job 1 (lr=1.0 fail=True) failed: RuntimeError: diverged at lr=1.0")
    assert last[1].startswith("error: job 3 (lr=2.0 fail=True) failed: RuntimeError: diverged at lr=2.0")
    assert last[2] == f"error: 2 of 4 jobs failed; see {sweep / 'summary.md'}"
    assert "Traceback" not in proc.stdout + proc.stderr  # it stays in the job's record
    assert "RuntimeError" in json.loads((sweep / "1" / JOB_RECORD).read_text())["traceback"]
