"""End to end through train.py in a subprocess, as a researcher runs it."""

from __future__ import annotations

import csv
import json
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


@pytest.mark.slow  # ~23 s: 30 steps of train.py in a subprocess, plots included
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


def test_bpe_token_directory_trains_and_sample_decodes_it(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    p = subprocess.run([sys.executable, "-m", "apt.data.prepare", f"input={corpus}", f"out={tmp_path / 'tok'}",
                        "tokenizer=bpe", "vocab_size=300", "progress=false"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    run_dir = tmp_path / "run"
    r = train("model=tiny", "data=tokens", f"data.dir={tmp_path / 'tok'}", "data.block_size=32", "data.batch_size=4",
              "trainer=debug", "trainer.max_steps=20", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data tokens:tok: " in r.stdout and "vocab 300 (bpe)" in r.stdout
    (tmp_path / "tok").rename(tmp_path / "gone")  # the checkpoint alone must be enough
    s = subprocess.run([sys.executable, "-m", "apt.sample", f"ckpt={run_dir}/checkpoints/step-00000020.pt",
                        "max_new_tokens=30", "prompt=the quick", "temperature=0"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert s.returncode == 0, s.stderr
    assert s.stdout.startswith("the quick") and len(s.stdout) > len("the quick") + 30  # BPE tokens: > 1 char


@pytest.mark.parametrize("argv", [
    ["--cfg", "job", "plugin=[logging]"],
    ["--help"],
    ["model=tiny", "model=tinyy"],  # refused by the preflight
])
def test_cfg_job_help_and_refusals_do_not_import_torch(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['train.py', *{argv!r}]\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = {'torch', 'tokenizers', 'datasets', 'tiktoken'} & set(sys.modules)\n"
            "assert not heavy, f'{heavy} imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if argv[0] == "--cfg":
        assert "logging:" in r.stdout and "_target_: apt.plugins.builtin" in r.stdout
    if argv[0] == "--help":
        assert "provider/attention: " in r.stdout and "plugin: " in r.stdout


def test_the_preflight_of_a_valid_run_does_not_import_torch():
    """train.py checks a run completely (plugins set up, providers validated) before torch."""
    code = ("import sys\nfrom apt.app import preflight\n"
            "assert preflight(['model=tiny', 'plugin=[logging,early_stopping]', 'provider/ffn=swiglu',"
            " 'trainer.device=cpu']) is False\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_multirun_over_seeds_and_providers(tmp_path, cache):
    sweep = tmp_path / "sweep"
    r = train("-m", *TINY, cache, "trainer.max_steps=4", "seed=1,2", "provider/attention=naive",
              "plugin=[],[early_stopping]", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(sweep.glob("*/metrics.csv"))) == 4
    overrides = sorted((d / ".hydra" / "overrides.yaml").read_text() for d in sweep.iterdir() if d.is_dir())
    assert sum("early_stopping" in o for o in overrides) == 2


def _train_with_flaky(tmp_path, *args, flags=()):
    """train.py with plugin 'flaky' (tests.helpers.Flaky: a bug from its second step on) selected."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "train.py", *flags, *TINY, f"data.cache_dir={tmp_path / 'cache'}",
                           "+plugin.flaky={_target_: tests.helpers.Flaky}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_a_failed_plugin_ends_train_py_with_one_line_and_exit_1(tmp_path):
    run_dir = tmp_path / "run"
    r = _train_with_flaky(tmp_path, "trainer.max_steps=8", "optim.warmup_steps=2", f"hydra.run.dir={run_dir}")
    assert r.returncode == 1, r.stderr[-3000:]
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: the run failed at step 4: plugin 'flaky' failed: ") and "Traceback" not in r.stderr
    assert "first error: IndexError: index 2 is out of range" in line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 4 and "plugin 'flaky' failed" in summary["failed"]
    assert "| FAILED: plugin 'flaky' failed" in r.stdout


def test_a_sweep_job_whose_plugin_failed_is_a_failed_job(tmp_path):
    """on_plugin_error=fail: the job is recorded failed (the sweep exits 1); warn: it completes."""
    sweep = tmp_path / "sweep"
    r = _train_with_flaky(tmp_path, "trainer.max_steps=6", "trainer.on_plugin_error=fail,warn",
                          f"hydra.sweep.dir={sweep}", flags=["-m"])
    assert r.returncode == 1, r.stderr[-3000:]
    with (sweep / "summary.csv").open(newline="") as fh:
        rows = {row["overrides"].split()[-1]: row for row in csv.DictReader(fh)}
    failed, warned = rows["trainer.on_plugin_error=fail"], rows["trainer.on_plugin_error=warn"]
    assert failed["status"] == "failed" and "plugin 'flaky' failed" in failed["error"]
    assert "first error: IndexError: index 2 is out of range" in failed["error"]
    assert warned["status"] == "completed" and warned["steps"] == "6"


def _rows(path):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("tokens_per_s")
    return [[v for j, v in enumerate(line.split(",")) if j != drop] for line in lines]


@pytest.mark.slow
def test_sigterm_then_the_readme_resume_command_continues_the_same_run(tmp_path, cache):
    """The README's commands as written: a run with periodic checkpoints in its own directory,
    SIGTERM from outside (Ctrl-C does the same), then `train.py trainer.resume=true
    hydra.run.dir=D` alone. The result is the uninterrupted run's."""
    run_dir = tmp_path / "long"
    args = [*TINY, cache, "trainer.max_steps=400", "trainer.eval_every=100", "trainer.log_every=20",
            "trainer.checkpoint_every=50", "trainer.threads=1", "optim.decay=linear", "seed=7"]
    proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert f"continue with trainer.resume=true hydra.run.dir={run_dir}" in out + err
    stopped_at = int(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1].stem.split("-")[1])
    assert 40 <= stopped_at < 400 and not (run_dir / "summary.json").exists()

    r = train("trainer.resume=true", f"hydra.run.dir={run_dir}")  # exactly as the README has it
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints'}" in r.stdout + r.stderr
    history = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "model=tiny" in history and history.rstrip().endswith("- trainer.resume=true")

    full = tmp_path / "full"
    assert train(*args, f"hydra.run.dir={full}").returncode == 0
    assert _rows(run_dir / "metrics.csv") == _rows(full / "metrics.csv")
    keep = ("step", "val_loss", "val_loss_se", "best_val_loss", "best_step", "train_loss", "params")
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, full))
    assert {k: ours[k] for k in keep} == {k: theirs[k] for k in keep}
