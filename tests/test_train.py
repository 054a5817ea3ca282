"""End to end through train.py in a subprocess, as a researcher runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data=synthetic", "trainer=debug"]


def train(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.fixture
def cache(tmp_path):
    return f"data.cache_dir={tmp_path / 'cache'}"


def test_short_run_writes_every_output(tmp_path, cache):
    run_dir = tmp_path / "run"
    r = train(*TINY, cache, "trainer.max_steps=30", "trainer.plot=true", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "summary: params" in out and "best val loss" in out
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv", "loss.png",
                 "summary.json", "train.log", "checkpoints/step-00000030.pt"):
        assert (run_dir / name).is_file(), name
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,train_loss,val_loss,val_loss_se,val_tokens,lr,tokens_per_s")
    first, last = float(rows[1].split(",")[2]), float(rows[-1].split(",")[2])
    assert last < first  # the loss falls
    s = subprocess.run([sys.executable, "-m", "apt.sample", f"ckpt={run_dir}/checkpoints/step-00000030.pt",
                        "max_new_tokens=5", "prompt=1 2 3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert s.returncode == 0, s.stderr
    assert len(s.stdout.split()) == 8  # prompt (3 ids) + 5 sampled ids


def test_cfg_job_and_help_do_not_import_torch():
    code = ("import runpy, sys\n"
            "sys.argv = ['train.py', '--cfg', 'job', 'plugin=[logging]']\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "logging:" in r.stdout and "_target_: apt.plugins.builtin" in r.stdout
    assert time.perf_counter() - t0 < 10  # ~0.5 s on an idle 2-core machine
    h = train("--help")
    assert h.returncode == 0 and "provider/attention: " in h.stdout and "plugin: " in h.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["trainer.max_steps=abc"], "could not be converted to Integer"),
    (["plugin=[nosuch]"], "unknown plugin 'nosuch'"),
    (["model.num_heads=3"], "error: model.d_model=32 is not divisible by num_heads=3"),
    (["provider/attention=registered", "provider.attention.name=nope"], "unknown attention provider 'nope'"),
])
def test_bad_input_is_one_clear_error(args, expected, tmp_path):
    r = train(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}")  # not ./outputs in the checkout
    assert r.returncode != 0
    assert expected in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 8


def test_multirun_over_seeds_and_providers(tmp_path, cache):
    sweep = tmp_path / "sweep"
    r = train("-m", *TINY, cache, "trainer.max_steps=4", "seed=1,2", "provider/attention=naive",
              "plugin=[],[early_stopping]", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(sweep.glob("*/metrics.csv"))) == 4
    overrides = sorted((d / ".hydra" / "overrides.yaml").read_text() for d in sweep.iterdir() if d.is_dir())
    assert sum("early_stopping" in o for o in overrides) == 2


def test_sigterm_saves_checkpoint_and_resume_finishes(tmp_path, cache):
    run_dir = tmp_path / "run"
    args = [*TINY, cache, "trainer.max_steps=3000", "trainer.eval_every=1000", "trainer.log_every=1",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    ckpts = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].stem.split("-")[1])
    assert 3 <= stopped_at < 3000
    r = train(*args, "trainer.resume=true", "trainer.max_steps=" + str(stopped_at + 5))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ckpts[0]} at step {stopped_at}" in r.stdout + r.stderr
    assert (run_dir / "checkpoints" / f"step-{stopped_at + 5:08d}.pt").is_file()
