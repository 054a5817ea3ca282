"""scripts/bench_nanogpt.py: the data both trainers see, the commands, the table, and one
short pair end to end (nanoGPT and an APT preset trained a few steps on a slice of the text,
both scored by the same evaluator)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_nanogpt.py"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
ANCHOR = ROOT.parent / "shared" / "anchors" / "nanogpt"

spec = importlib.util.spec_from_file_location("bench_nanogpt", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

needs_anchor = pytest.mark.skipif(not (SHAKESPEARE.is_file() and (ANCHOR / "train.py").is_file()),
                                  reason="needs ../shared/data/tinyshakespeare.txt and ../shared/anchors/nanogpt")


@pytest.fixture
def text(tmp_path) -> Path:
    """A 40k-character slice of tiny shakespeare (every character of the full text appears)."""
    full = SHAKESPEARE.read_text(encoding="utf-8")
    head = full[:40_000]
    extra = "".join(sorted(set(full) - set(head)))
    path = tmp_path / "slice.txt"
    path.write_text(extra + head, encoding="utf-8")
    return path


@needs_anchor
def test_apt_val_split_is_the_tail_of_nanogpts_val_bin(text, tmp_path):
    nano = bench.prepare_nanogpt(ANCHOR, text, tmp_path)
    tokens, chars = bench.apt_val_tokens(text.read_text(encoding="utf-8"))
    val = np.fromfile(nano / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    n = len(text.read_text(encoding="utf-8"))
    assert len(val) == n - int(n * 0.9) and len(tokens) == int(n * 0.1)
    assert np.array_equal(val[-len(tokens):], tokens) and len(chars) == 65
    assert not (nano / "out").exists() and (nano / "train.py").is_file()


def test_commands_keep_the_readme_config_and_shorten_only_the_length():
    full = bench.nanogpt_command(None, Path("/o"))
    assert "--n_layer=4" in full and "--max_iters=2000" in full and "--dropout=0.0" in full
    assert "--always_save_checkpoint=True" in full and full[-1] == "--out_dir=/o"
    short = bench.nanogpt_command(7, Path("/o"))
    assert "--max_iters=7" in short and "--eval_interval=7" in short and "--max_iters=2000" not in short
    apt = bench.apt_command("shakespeare_fast", Path("/d.txt"), 2, Path("/r"), 7)
    assert apt[2:] == ["experiment=shakespeare_fast", "data.path=/d.txt", "trainer.threads=2",
                       "hydra.run.dir=/r", "trainer.max_steps=7"]


def test_table_reports_each_pair_and_the_medians(capsys):
    rows = [{"arm": a, "pair": i, "wall": w, "cpu": w / 2 if a == "fast" else w, "load": 1.0, "loss": loss, "se": 0.01, "step": 10}
            for i, a, w, loss in [(1, "nanogpt", 100.0, 1.90), (1, "fast", 45.0, 1.88),
                               (2, "nanogpt", 80.0, 1.90), (2, "fast", 48.0, 1.89)]]
    assert bench.print_results(rows, ["fast"], 0.5) is False  # ratios 0.45 and 0.60: median 0.525
    out = capsys.readouterr().out
    assert re.search(r"2\s+fast\s+48\.0 .* 0\.600\s+0\.300$", out, re.M)
    assert "fast: wall 46.5 s, ratio 0.525 (CPU time 0.263), val loss 1.8850 (-0.0150 vs nanoGPT)" in out
    assert "NOT met" in out
    assert bench.print_results(rows, ["fast"], 0.6) is True


def test_bad_arguments_are_one_error_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--pairs", "0", "--data", str(tmp_path / "none.txt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--pairs must be >= 1, got 0" in err and "none.txt is not a file" in err


@pytest.mark.slow
@needs_anchor
def test_one_short_pair_end_to_end(text, tmp_path, capsys):
    assert bench.main(["--pairs", "1", "--steps", "3", "--threads", "1", "--data", str(text),
                       "--workdir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    runs = re.findall(r"pair 1 (\S+): wall ([\d.]+) s, .* val ([\d.]+) \(step (\d+)\)", out)
    assert sorted(r[0] for r in runs) == ["nanogpt", "shakespeare_fast"]
    assert all(float(r[1]) > 0 and 3.0 < float(r[2]) < 4.5 for r in runs)  # ~ln(65) after 3 steps
    assert {r[0]: r[3] for r in runs} == {"nanogpt": "3", "shakespeare_fast": "3"}
    assert "medians over 1 pair(s)" in out and re.search(r"^goal (NOT )?met$", out, re.M)


def test_gpu_commands_run_nanogpts_gpu_config_as_it_is():
    cmd = bench.nanogpt_command(None, Path("/o"), gpu=True)
    assert cmd[1] == "-c" and "max_memory_allocated" in cmd[2] and cmd[3:5] == ["train.py", "config/train_shakespeare_char.py"]
    assert cmd[5:] == ["--always_save_checkpoint=True", "--out_dir=/o"]  # no CPU flags: the config file decides
    cut = bench.nanogpt_command(bench.scaled_steps(None, 0.5), Path("/o"), gpu=True)
    assert "--max_iters=2500" in cut and "--lr_decay_iters=2500" in cut
    assert not any(a.startswith("--eval_interval") for a in cut)  # 2500 is on its 250-step grid: saved at the end
    assert bench.scaled_steps(None, 0.03) == 250
    assert bench.scaled_steps("shakespeare_gpu", 0.5) == 2500
    assert bench.scaled_steps("shakespeare_gpu_fast", 0.5) == 1000
    rehearse = bench.nanogpt_command(3, Path("/o"), gpu=True, rehearse=True)
    assert "--device=cpu" in rehearse and "--eval_interval=3" in rehearse


def test_gpu_stats_from_nanogpts_log_and_apts_metrics(tmp_path):
    log = tmp_path / "nanogpt.log"
    log.write_text("\n".join(["iter 0: loss 4.2, time 30000.00ms, mfu -100.00%"]
                             + [f"iter {i}: loss 2.0, time {10.0 + (i % 3)}ms, mfu 30.00%" for i in range(10, 70, 10)]
                             + ["step 50: train loss 1.9, val loss 2.0", "bench: peak_mem_mb 2048.5"]), encoding="utf-8")
    flops = bench.flops_per_token(layers=6, d_model=384, block=256, vocab=65)
    assert flops == 6 * (12 * 6 * 384**2 + 65 * 384) + 12 * 6 * 384 * 256
    nano = bench.gpu_stats("nanogpt", log, None, tokens_per_iter=64 * 256, flops=flops)
    assert nano["ms_iter"] == 11.0 and nano["peak_mb"] == 2048.5  # iterations 20..60 (10 and before: warm-up): 12, 10, 11, 12, 10 ms
    assert nano["tokens_s"] == pytest.approx(64 * 256 / 0.011)
    assert nano["mfu"] == pytest.approx(flops * nano["tokens_s"] / bench.PEAK_FLOPS)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,train_loss,throughput/ms_per_step,throughput/peak_mem_mb\n"
                                     "5,2.0,900.0,100\n10,1.9,9.0,300\n15,1.8,,\n20,1.7,11.0,310\n25,1.6,10.0,305\n",
                                     encoding="utf-8")
    apt = bench.gpu_stats("shakespeare_gpu", tmp_path / "apt.log", run, tokens_per_iter=64 * 256, flops=flops)
    assert apt["ms_iter"] == 10.0 and apt["peak_mb"] == 310.0  # the first (compiling) window is left out


def test_gpu_only_options_are_refused_alone(capsys):
    for argv, message in ((["--scale", "0.5"], "--scale needs --gpu"), (["--rehearse"], "--rehearse rehearses --gpu"),
                          (["--gpu", "--scale", "2"], "factor in (0, 1], got 2.0"),
                          (["--gpu", "--scale", "0.5", "--steps", "3"], "--scale and --steps both")):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.slow
@needs_anchor
def test_gpu_train_check_rehearses_on_the_cpu(text, tmp_path):
    """scripts/gpu_train_check.sh with REHEARSE=1: both nanoGPT and the GPU presets, tiny, on the CPU."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "REHEARSE": "1", "PY": sys.executable, "APT_SHAKESPEARE": str(text)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads((out / "bench.json").read_text())
    assert sorted(r["arm"] for r in runs) == ["nanogpt", "shakespeare_gpu", "shakespeare_gpu_fast"]
    assert all(r["step"] == 3 and r["ms_iter"] > 0 and r["tokens_s"] > 0 for r in runs)
    assert "256-character windows" in (out / "bench.txt").read_text()
    assert "summary: params" in (out / "paths" / "train.log").read_text()
    assert "torch" in (out / "versions.txt").read_text()
