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
