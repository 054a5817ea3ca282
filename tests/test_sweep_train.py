"""A real train.py multirun: one job trains, one fails its config check; the sweep summary
still lists both, and submitit's local executor (the SLURM preset's code path) works too."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apt.training.runlock import RunLock

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.max_steps=4",
        "trainer.eval_every=2", "trainer.eval_batches=1", "trainer.log_every=2",
        "data.num_tokens=4000", "optim.warmup_steps=1"]


def _sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *TINY, *overrides,
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    return proc, sweep


def _rows(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open(newline="") as fh:
        return {r["overrides"].split()[-1]: r for r in csv.DictReader(fh)}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=slurm_local"]], ids=["basic", "submitit_local"])
def test_train_sweep_with_a_failing_job_leaves_a_complete_summary(tmp_path, launcher):
    proc, sweep = _sweep(tmp_path, "model.num_heads=2,3", *launcher)
    assert proc.returncode == 1, proc.stderr[-4000:]  # a job failed; reported after the summary
    rows = _rows(sweep)
    ok, bad = rows["model.num_heads=2"], rows["model.num_heads=3"]
    assert ok["status"] == "completed" and ok["steps"] == "4"
    assert float(ok["final_val_loss"]) > 0 and float(ok["tokens_per_s"]) > 0
    assert bad["status"] == "failed"
    assert "d_model=32 is not divisible by num_heads=3" in bad["error"]
    md = (sweep / "summary.md").read_text()
    assert "2 jobs: 1 completed, 1 failed." in md
    assert (sweep / "val_loss.png").stat().st_size > 0


@pytest.mark.slow
def test_seed_sweep_groups_configurations_with_confidence_intervals(tmp_path):
    proc, sweep = _sweep(tmp_path, "provider/attention=sdpa,naive", "seed=1,2,3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    with (sweep / "summary_grouped.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["config"], r["n"]) for r in rows] == [("provider/attention=sdpa", "3"),
                                                     ("provider/attention=naive", "3")]
    assert all(float(r["val_loss_ci95"]) > 0 for r in rows)
    assert rows[0]["delta_vs_baseline"] == "" and rows[1]["delta_ci95"] != ""
    assert 0.0 <= float(rows[1]["p_value"]) <= 1.0
    assert all(float(r["final_val_loss_se"]) > 0 for r in _rows(sweep).values())


@pytest.mark.slow
def test_a_sweep_with_a_bad_value_or_a_busy_run_directory_ends_in_one_line_per_failed_job(tmp_path):
    # Job 1's value fails its config check and job 2's run directory is held by another run;
    # both are failed jobs, job 0 still trains, and no traceback is printed.
    with RunLock(tmp_path / "multirun" / "2"):
        proc, sweep = _sweep(tmp_path, "model.num_heads=2,3,4")
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.rstrip().splitlines()[-3:]
    assert last[0] == "error: job 1 (model.num_heads=3) failed: model.d_model=32 is not divisible by num_heads=3"
    assert last[1].startswith("error: job 2 (model.num_heads=4) failed: the run directory ")
    assert f"is in use by pid {os.getpid()}" in last[1]
    assert last[2] == f"error: 2 of 3 jobs failed; see {sweep / 'summary.md'}"
    assert [r["status"] for r in _rows(sweep).values()] == ["completed", "failed", "failed"]
