"""kill -9 at every step boundary and inside every checkpoint write, and at random moments:
each resume ends as if nothing had happened.

The first test runs ``scripts/kill_resume.py`` (its light scenario): a small moe + align +
early stopping + schedule run is killed at each of its step boundaries and inside each of
its checkpoint writes, one fresh run directory per kill point, each is resumed as the README
says, and its metrics.csv (column order included) and summary.json are compared with the
uninterrupted run's. The heavier variant (``--heavy``) and its result: docs/benchmarks.md.

In the second test one tiny run saving a checkpoint every step is killed ten or more times
(SIGKILL: no handler, no cleanup, possibly in the middle of a checkpoint write or of a
metrics row) and resumed with ``trainer.resume=true`` after each kill. Each kill waits until
the run has written a random number (1-8) of new checkpoints, then a random fraction of a
step, so the number of kills does not depend on the machine's speed and no timing is asserted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apt.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.max_steps=150", "trainer.checkpoint_every=1",
        "trainer.keep_last=2", "trainer.log_every=5", "trainer.eval_every=50", "trainer.threads=1", "seed=11"]
KILLS = 10


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="scripts/kill_resume.py forks its runs")
def test_kill_9_at_every_step_boundary_and_inside_every_checkpoint_write(tmp_path):
    report_file = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "scripts/kill_resume.py", "--work", str(tmp_path / "work"), "--jobs", "2",
                           "--json", str(report_file)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert report_file.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    light = json.loads(report_file.read_text())["scenarios"]["light"]
    # 12 step boundaries; checkpoints of steps 2, 4, ..., 12 and the final one of step 12, each
    # killed half written and right after its rename
    saves = [2, 4, 6, 8, 10, 12, 12]
    expected = [f"step {n}" for n in range(1, 13)] + \
        [f"save-{k} #{i} (step {s})" for i, s in enumerate(saves, 1) for k in ("mid", "renamed")]
    assert sorted(light["points"]) == sorted(expected)
    differing = [r for r in light["results"] if not r["equal"]]
    assert differing == [], done.stdout[-5000:]
    assert all(r["killed"] and r["resumed"] for r in light["results"])
    assert done.returncode == 0 and "26 kill points, 26 resumed runs equal the uninterrupted run" in done.stdout
    full = tmp_path / "work" / "light" / "full"
    summary = json.loads((full / "summary.json").read_text())
    assert summary["step"] == 12 and summary["stopped"].startswith("early_stopping: no improvement")
    header = (full / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"moe/temperature", "moe/load_entropy", "loss/align", "schedule/route_temp"} <= set(header)


def _newest(run_dir: Path) -> int:
    names = [p.name for p in (run_dir / "checkpoints").glob("step-*.pt")] if (run_dir / "checkpoints").is_dir() else []
    return max((int(n[5:13]) for n in names), default=0)


def _train(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.mark.slow
def test_kill_9_at_random_moments_and_resume_ends_with_the_uninterrupted_weights(tmp_path):
    rng = random.Random(14)
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    run_dir = tmp_path / "killed"
    command = [*ARGS, cache, f"hydra.run.dir={run_dir}"]
    kills, logs = 0, []
    for attempt in range(3 * KILLS):  # bounded: every attempt makes progress or ends the run
        if kills == KILLS:
            break
        before, wanted = _newest(run_dir), rng.randint(1, 8)
        logs.append(tmp_path / f"attempt-{attempt}.log")
        proc = _train(command, logs[-1])
        deadline = time.time() + 180
        while proc.poll() is None and _newest(run_dir) < before + wanted and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.02))
        proc.kill()  # SIGKILL
        proc.wait(timeout=60)
        kills += 1
        command = ["trainer.resume=true", f"hydra.run.dir={run_dir}"]
    assert kills == KILLS, logs[-1].read_text()[-3000:]
    final = _train(command, tmp_path / "final.log")
    assert final.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-3000:]
    resumed = [p.read_text() for p in [*logs[1:], tmp_path / "final.log"]]
    assert all("resumed from" in t or "no checkpoint" in t for t in resumed)
    assert any("took over the stale lock" in t for t in resumed)  # the dead run's lock file

    full = tmp_path / "full"
    assert _train([*ARGS, cache, f"hydra.run.dir={full}"], tmp_path / "full.log").wait(timeout=300) == 0
    ours, theirs = (load_checkpoint(d / "checkpoints" / "step-00000150.pt") for d in (run_dir, full))
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # noqa: E731
    assert strip(ours["metrics_rows"]) == strip(theirs["metrics_rows"])
    summaries = [json.loads((d / "summary.json").read_text()) for d in (run_dir, full)]
    assert summaries[0]["val_loss"] == summaries[1]["val_loss"]
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("step-")]
    assert leftovers == [] and not (run_dir / ".apt.lock").exists()
