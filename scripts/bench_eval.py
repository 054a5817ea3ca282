"""Cost of the final whole-split evaluation, and how noisy the old 20-batch estimate was.

    python scripts/bench_eval.py                    # trains the default run first (~1-2 min)
    python scripts/bench_eval.py --run-dir DIR      # reuse a finished train.py run directory
    python scripts/bench_eval.py --draws 20         # quicker, coarser noise estimate

1. Cost: ``python train.py`` (the default run: small model, 1000 steps on the stdlib data) in a
   subprocess; its summary.json holds the final evaluation's time and the run's wall time,
   measured in the same process, so their ratio is insensitive to how busy the machine is.
2. Noise, on that run's final checkpoint (loaded through ``apt.loading``): the whole-split
   loss and its standard error, against the estimator APT used before, the mean loss over
   ``eval_batches`` batches of ``batch_size`` windows at random starts
   (``BatchLoader.fixed_starts(n, seed)``), drawn with ``--draws`` different seeds: the spread
   of those draws is the noise a reported val loss used to carry. Also the autocorrelation of
   neighbouring windows' losses, and the standard error a per-token or per-window estimator
   would claim next to the batch-means one APT reports (apt/training/evaluation.py).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_default(run_dir: Path) -> float:
    """``python train.py`` into ``run_dir``; returns the process wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "trainer.progress=false"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def old_estimates(model, tokens: np.ndarray, *, batch_size: int, block_size: int, batches: int,
                  draws: int) -> np.ndarray:
    """The pre-whole-split val loss (mean of ``batches`` batch losses at random starts), per seed."""
    import torch

    from apt.data.loader import BatchLoader

    loader = BatchLoader(tokens, batch_size=batch_size, block_size=block_size)
    out = []
    with torch.no_grad():
        for seed in range(draws):
            losses = [float(model(*loader.batch(row))[1]) for row in loader.fixed_starts(batches, seed=seed)]
            out.append(sum(losses) / len(losses))
    return np.array(out)


def token_nll(model, tokens: np.ndarray, starts: np.ndarray, T: int, B: int) -> np.ndarray:
    """Per-token NLL ``(W, T)`` of the full windows at ``starts``."""
    import torch
    import torch.nn.functional as F

    rows = []
    with torch.no_grad():
        for i in range(0, len(starts), B):
            chunk = torch.from_numpy(tokens[starts[i:i + B, None] + np.arange(T + 1)].astype(np.int64))
            logits = model(chunk[:, :-1])[0]
            rows.append(F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="none")
                        .view(-1, T).numpy())
    return np.concatenate(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=None, help="a finished train.py run (default: train one)")
    ap.add_argument("--draws", type=int, default=100, help="seeds of the old estimator per batch count")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the noise part")
    args = ap.parse_args()

    import torch

    from apt.data import load_dataset
    from apt.loading import load_model
    from apt.training.evaluation import Evaluator

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.run_dir is None:
        tmp = tempfile.TemporaryDirectory()
        run_dir = Path(tmp.name) / "default"
        process_wall = train_default(run_dir)
    else:
        run_dir, process_wall = args.run_dir, math.nan
    s = json.loads((run_dir / "summary.json").read_text())
    print("cost of the final evaluation (one train.py run, same process)")
    print(f"  final whole-split eval   {s['final_eval_time_s']:8.2f} s   ({s['val_tokens']:,} tokens)")
    print(f"  all evaluations          {s['eval_time_s']:8.2f} s")
    print(f"  run wall (fit + final)   {s['wall_s']:8.2f} s   (process: {process_wall:.1f} s)")
    print(f"  ratio final eval / wall  {s['final_eval_time_s'] / s['wall_s']:8.3f}")

    model, _, state = load_model(str(s["checkpoint"]))
    d = state["config"]["data"]
    val = load_dataset(d).val
    B, T = int(d["batch_size"]), int(d["block_size"])
    ev = Evaluator(val, block_size=T, batch_size=B)
    losses = ev.run(lambda x, y: model(x, y), ev.windows())
    whole = losses.result()
    full = losses.tokens == T
    means = losses.nll[full] / T
    acf = {lag: float(np.corrcoef(means[:-lag], means[lag:])[0, 1]) for lag in (1, 16, 64, 256)}
    print(f"\nnoise of a val loss (step {state['progress']['step']} checkpoint, {len(val):,} val tokens)")
    print(f"  whole split              loss {whole.loss:.4f}  se {whole.se:.4f}  "
          f"({whole.windows} windows of {T}; the run reported {s['val_loss']:.4f})")
    t0 = time.perf_counter()
    for batches in (20, 50):
        est = old_estimates(model, val, batch_size=B, block_size=T, batches=batches, draws=args.draws)
        print(f"  old {batches:2d} x {B} windows      mean {est.mean():.4f}  std over {args.draws} draws "
              f"{est.std(ddof=1):.4f}  range [{est.min():.4f}, {est.max():.4f}]")
    print("  autocorrelation of window losses at lag " + ", ".join(f"{k}: {v:+.2f}" for k, v in acf.items()))
    nll = token_nll(model, val, ev.windows().starts[full], T, B)  # (W, T)
    token_se = float(nll.std(ddof=1) / math.sqrt(nll.size))
    window_se = float(means.std(ddof=1) / math.sqrt(len(means)))
    print(f"  se if tokens were independent {token_se:.4f}; if windows were {window_se:.4f}; "
          f"batch means (reported) {whole.se:.4f}")
    print(f"  ({time.perf_counter() - t0:.0f} s for the old-estimator draws)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
