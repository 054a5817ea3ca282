"""nanoGPT beside APT presets on tiny-shakespeare: whole-process wall time and whole-split val loss.

    python scripts/bench_nanogpt.py                                   # 3 pairs: nanoGPT vs shakespeare_fast
    python scripts/bench_nanogpt.py --pairs 5 --presets shakespeare_fast shakespeare_ref
    python scripts/bench_nanogpt.py --pairs 1 --steps 20              # does it run? (numbers mean nothing)
    python scripts/bench_nanogpt.py --gpu --pairs 1                    # nanoGPT's GPU config (scripts/gpu_train_check.sh)

``--gpu`` compares nanoGPT's shakespeare-char GPU config (its config file as is: 6 x 6 x 384,
block 256, batch 64, dropout 0.2, bf16, torch.compile, 5000 iterations) with
``experiment=shakespeare_gpu`` (the same run) and ``shakespeare_gpu_fast``, scored in
256-character windows on the GPU, and adds per run: median ms per iteration, tokens/s, MFU
and peak CUDA memory (see :func:`gpu_stats`). ``--scale F`` cuts every run's length (nanoGPT's
max_iters and each preset's max_steps) by the same factor F. ``--rehearse`` runs the same
plumbing on the CPU with a 2-layer, 64-dim model and batch 4 (numbers mean nothing).

Arms. nanoGPT (../shared/anchors/nanogpt, run as its own process from a scratch copy of that
folder, never imported here) with its README's CPU command plus ``--always_save_checkpoint=True``
and an ``--out_dir`` per run: its config file sets ``always_save_checkpoint = False``, which
saves only when its own 20-batch estimate improves, so the checkpoint could be an earlier
step than the last; with True it saves at every evaluation, the last one at iteration 2000,
i.e. after 2000 updates (nanoGPT then runs one more update that it never saves). Each APT
preset runs as ``python train.py experiment=<preset> data.path=<the same text>
trainer.threads=<threads> hydra.run.dir=<scratch>``, nothing else changed. Both get
``OMP_NUM_THREADS=<threads>``. Wall time is the whole process, start to exit, for both.

Pairs alternate the order of the arms (nanoGPT first in odd pairs, last in even ones), so a
machine that slows down or speeds up over minutes weighs on both. Before timing, both arms'
data are prepared (nanoGPT's ``train.bin``/``val.bin``/``meta.pkl`` as its prepare.py writes
them, APT's token cache) and one untimed ``import torch`` warms the page cache.

Scoring. Each final model is scored in a separate process by :func:`score`, the same code
for both: APT's whole-split evaluator (:class:`apt.training.evaluation.Evaluator`) over
every non-overlapping 64-character window of one token array, every target counted once.
The two trainers cut the validation split differently (nanoGPT: from ``int(n * 0.9)``; APT:
the last ``int(n * 0.1)`` characters, one fewer), so both are scored on APT's split, which
lies inside nanoGPT's: neither model trained on any of it. The script asserts that both use
the sorted character set (the same ids), that APT's val split is that array and that it is
the tail of nanoGPT's ``val.bin``. nanoGPT's ``model.py`` is imported from the anchor
directory by the scoring process at run time. APT's own final val loss (summary.json) must
equal its score: a check that the scorer is APT's evaluation.

Prints per run: wall s, CPU s (the process's user + system time), whole-split val loss, and
per pair each preset's wall and CPU-time ratios to nanoGPT; then the medians and whether the
goal (median wall ratio <= ``--goal``, median loss no worse than nanoGPT's) is met. On a
loaded machine the CPU-time ratio (at ``--threads 1``) says what the wall ratio would be on
a quiet one; the goal is judged on wall time only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT.parent / "shared" / "anchors" / "nanogpt"
DATA = Path(os.environ.get("APT_SHAKESPEARE", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
BLOCK = 64  # characters per scored window (the README CPU config's block)
GPU_BLOCK = 256  # nanoGPT's GPU config's block
#: Peak dense bf16 tensor throughput used for MFU: H100/H200 SXM, 989.4 TFLOP/s (nanoGPT's
#: own printout assumes an A100's 312; :func:`gpu_stats` recomputes both arms with this one).
PEAK_FLOPS = 989.4e12
#: --rehearse: the GPU plumbing on a CPU, small (nanoGPT flags, then APT overrides).
REHEARSE_NANOGPT = ["--device=cpu", "--compile=False", "--dtype=float32", "--n_layer=2", "--n_head=2",
                    "--n_embd=64", "--batch_size=4", "--eval_iters=2", "--log_interval=1"]
REHEARSE_APT = ["trainer.device=cpu", "trainer.precision=fp32", "trainer.compile=false", "model.num_layers=2",
                "model.num_heads=2", "model.d_model=64", "data.batch_size=4", "trainer.eval_batches=2",
                "plugin.throughput.every_n_steps=1"]
#: The README's CPU command (anchors/nanogpt/README.md), after ``train.py config/train_shakespeare_char.py``.
NANOGPT_ARGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                "--lr_decay_iters=2000", "--dropout=0.0"]


# -- data -------------------------------------------------------------------------------------
def apt_val_tokens(text: str) -> tuple[np.ndarray, str]:
    """APT's val split of ``text`` with ``data.tokenizer=char``: the last ``int(n * 0.1)`` ids."""
    chars = "".join(sorted(set(text)))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((stoi[c] for c in text), dtype=np.int64, count=len(text))
    return ids[len(ids) - int(len(ids) * 0.1):], chars


def prepare_nanogpt(anchor: Path, text_path: Path, workdir: Path) -> Path:
    """A scratch copy of the anchor with ``data/shakespeare_char`` written as its prepare.py does.

    Returns the copy's directory. Its ``val.bin`` must end with APT's val split (asserted).
    """
    dest = workdir / "nanogpt"
    shutil.copytree(anchor, dest, ignore=shutil.ignore_patterns("out*", "data", "__pycache__"))
    text = text_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = dict(enumerate(chars))
    n = len(text)
    data_dir = dest / "data" / "shakespeare_char"
    data_dir.mkdir(parents=True)
    train, val = text[:int(n * 0.9)], text[int(n * 0.9):]
    np.array([stoi[c] for c in train], dtype=np.uint16).tofile(data_dir / "train.bin")
    np.array([stoi[c] for c in val], dtype=np.uint16).tofile(data_dir / "val.bin")
    with open(data_dir / "meta.pkl", "wb") as fh:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, fh)
    scored, apt_chars = apt_val_tokens(text)
    nano_val = np.fromfile(data_dir / "val.bin", dtype=np.uint16).astype(np.int64)
    assert "".join(chars) == apt_chars, "nanoGPT's and APT's character sets differ"
    assert len(scored) <= len(nano_val) and np.array_equal(nano_val[len(nano_val) - len(scored):], scored), \
        "APT's val split is not the tail of nanoGPT's val.bin"
    return dest


# -- scoring (run in its own process per model) ----------------------------------------------
def score(forward: Any, tokens: np.ndarray, *, model: Any = None, batch_size: int = 32, block: int = BLOCK,
          device: str = "cpu") -> dict[str, Any]:
    """Whole-split loss of ``forward(x, y) -> (logits (B, T, V), ...)`` on ``tokens``: APT's evaluator."""
    from apt.training.evaluation import Evaluator

    if model is not None:
        model.to(device)
    ev = Evaluator(tokens, block_size=block, batch_size=batch_size, device=device)
    res = ev.run(forward, ev.windows(), model=model).result()
    return {"loss": res.loss, "se": res.se, "tokens": res.tokens}


def load_nanogpt(ckpt: Path, anchor: Path) -> tuple[Any, int]:
    """nanoGPT's model from its ``ckpt.pt`` and the iteration it was saved at (``model.py`` from ``anchor``)."""
    import torch

    sys.path.insert(0, str(anchor))
    from model import GPT, GPTConfig  # the anchor's model.py

    state = torch.load(ckpt, map_location="cpu")
    model = GPT(GPTConfig(**state["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state["model"].items()})
    return model, int(state["iter_num"])


def score_checkpoint(kind: str, ckpt: Path, tokens: np.ndarray, chars: str, anchor: Path,
                     block: int = BLOCK) -> dict[str, Any]:
    """Score one trainer's checkpoint on ``tokens`` after checking it reads them as ``chars``."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "nanogpt":
        model, step = load_nanogpt(ckpt, anchor)
        with open(ckpt.parent.parent / "data" / "shakespeare_char" / "meta.pkl", "rb") as fh:
            itos = pickle.load(fh)["itos"]
        assert "".join(itos[i] for i in range(len(itos))) == chars, "nanoGPT's ids are not the sorted characters"
        out = score(lambda x, y: model(x, y), tokens, model=model, block=block, device=device)
        return {**out, "step": step}
    from apt.data import load_dataset
    from apt.loading import load_model

    model, tokenizer, state = load_model(str(ckpt))
    assert tokenizer.kind == "char" and tokenizer.chars == chars, "APT's ids are not the sorted characters"
    val = np.asarray(load_dataset(state["config"]["data"]).val, dtype=np.int64)
    assert np.array_equal(val, tokens), "APT's val split is not the scored array"
    return {**score(model, tokens, model=model, block=block, device=device), "step": int(state["progress"]["step"])}


# -- runs -------------------------------------------------------------------------------------
def timed(cmd: list[str], *, cwd: Path, log: Path, threads: int) -> tuple[float, float]:
    """Run ``cmd`` to completion; ``(wall s, CPU s)`` of the whole process. Raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as fh:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {rc}; log {log}:\n{tail}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


#: --gpu: nanoGPT runs unmodified in a process that reports its peak CUDA memory on exit.
PEAK_MEMORY_WRAPPER = (
    "import atexit, runpy, sys, torch\n"
    "atexit.register(lambda: torch.cuda.is_available() and print("
    "f'bench: peak_mem_mb {torch.cuda.max_memory_allocated() / 2**20:.1f}', flush=True))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


def nanogpt_command(steps: int | None, out_dir: Path, *, gpu: bool = False, rehearse: bool = False) -> list[str]:
    """nanoGPT's command: the README CPU config, or (``gpu``) its GPU config file as it is."""
    args = [] if gpu else list(NANOGPT_ARGS)
    if rehearse:
        args += REHEARSE_NANOGPT
    if steps is not None:  # a short run: evaluate (and so save) at its last iteration
        args = [a for a in args if not a.startswith(("--max_iters", "--lr_decay_iters"))]
        args += [f"--max_iters={steps}", f"--lr_decay_iters={steps}"]
        if not (gpu and steps % 250 == 0):  # the GPU config's eval_interval stays where it fits
            args.append(f"--eval_interval={steps}")
    launcher = [sys.executable, "-c", PEAK_MEMORY_WRAPPER, "train.py"] if gpu else [sys.executable, "train.py"]
    return [*launcher, "config/train_shakespeare_char.py", *args, "--always_save_checkpoint=True",
            f"--out_dir={out_dir}"]


def apt_command(preset: str, data: Path, threads: int, run_dir: Path, steps: int | None,
                extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), f"experiment={preset}", f"data.path={data}",
           f"trainer.threads={threads}", f"hydra.run.dir={run_dir}", *extra]
    return cmd + ([f"trainer.max_steps={steps}"] if steps is not None else [])


def scaled_steps(preset: str | None, scale: float) -> int:
    """A run's length cut by ``scale``: nanoGPT's 5000 GPU iterations (``preset`` None) or a preset's max_steps."""
    if preset is None:  # a multiple of nanoGPT's eval_interval, 250, so its last iteration is saved
        return max(250, round(5000 * scale / 250) * 250)
    from apt.compose import compose

    return max(1, round(int(compose([f"experiment={preset}"]).trainer.max_steps) * scale))


# -- GPU statistics ---------------------------------------------------------------------------
NANOGPT_ITER = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms")


def flops_per_token(*, layers: int, d_model: int, block: int, vocab: int) -> float:
    """nanoGPT's estimate (PaLM, appendix B): 6 N + 12 L d T, with N = 12 L d^2 + V d.

    N counts the block matrices (attention 4 d^2, FFN 8 d^2: SwiGLU with d_ff = 8d/3 as well)
    and the tied embedding; the same N for every arm of one shape, so MFU compares their speed.
    """
    n = 12 * layers * d_model**2 + vocab * d_model
    return 6 * n + 12 * layers * d_model * block


def gpu_stats(arm: str, log: Path, run_dir: Path | None, *, tokens_per_iter: int, flops: float) -> dict[str, float]:
    """Median ms per iteration (compile and the first iterations left out), tokens/s, MFU and
    peak memory in MiB, from nanoGPT's log or APT's metrics.csv (``plugin=[throughput]``: ms per
    step over windows of 10 steps, validation excluded). Peak memory is the CUDA allocator's
    (nanoGPT: read at its exit; nan on a CPU; APT's plugin gives the process RSS there)."""
    ms: list[float] = []
    peak = math.nan
    if arm == "nanogpt":
        iters: list[tuple[int, float]] = []
        for line in log.read_text(errors="replace").splitlines():
            if m := NANOGPT_ITER.match(line):
                iters.append((int(m.group(1)), float(m.group(2))))
            elif line.startswith("bench: peak_mem_mb "):
                peak = float(line.split()[-1])
        ms = [t for it, t in iters if it > 10] or [t for it, t in iters if it > 0]  # iter 0 compiles
    else:
        import csv

        with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("throughput/ms_per_step")]
        ms = [float(r["throughput/ms_per_step"]) for r in rows[1:] or rows]  # the first window compiles
        if rows:
            peak = max(float(r["throughput/peak_mem_mb"]) for r in rows)
    if not ms:
        raise RuntimeError(f"{arm}: no per-iteration times in {log if arm == 'nanogpt' else run_dir}")
    ms_iter = statistics.median(ms)
    tok_s = tokens_per_iter / (ms_iter / 1000)
    return {"ms_iter": ms_iter, "tokens_s": tok_s, "mfu": flops * tok_s / PEAK_FLOPS, "peak_mb": peak}


def run_arm(arm: str, i: int, args: argparse.Namespace, work: Path, nano_dir: Path) -> dict[str, Any]:
    """Train one arm (timed), then score its final model in a separate process (not timed)."""
    load = os.getloadavg()[0]
    log, run_dir = work / f"{arm}-{i}.log", None
    steps = args.steps
    if args.scale is not None:
        steps = scaled_steps(None if arm == "nanogpt" else arm, args.scale)
    if arm == "nanogpt":
        out = nano_dir / f"out-{i}"  # the scorer finds meta.pkl beside it
        wall, cpu = timed(nanogpt_command(steps, out, gpu=args.gpu, rehearse=args.rehearse), cwd=nano_dir,
                          log=log, threads=args.threads)
        ckpt, own = out / "ckpt.pt", None
    else:
        run_dir = work / f"{arm}-{i}"
        extra = (["plugin=[throughput]"] + (REHEARSE_APT if args.rehearse else [])) if args.gpu else []
        wall, cpu = timed(apt_command(arm, args.data, args.threads, run_dir, steps, extra), cwd=ROOT,
                          log=log, threads=args.threads)
        summary = json.loads((run_dir / "summary.json").read_text())
        ckpt, own = Path(summary["checkpoint"]), summary["val_loss"]
    block = GPU_BLOCK if args.gpu else BLOCK
    cmd = [sys.executable, str(Path(__file__).resolve()), "score", "nanogpt" if arm == "nanogpt" else "apt",
           str(ckpt), str(work / "val.npy"), str(args.anchor), str(block)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"scoring {ckpt} failed:\n{res.stderr[-3000:]}")
    scored = json.loads(res.stdout.strip().splitlines()[-1])
    # the scorer runs in fp32: a bf16 run's own evaluation differs by rounding, not by split
    tol = 2e-2 if args.gpu and not args.rehearse else 1e-5
    if own is not None and abs(own - scored["loss"]) > tol:
        raise RuntimeError(f"{arm}: the run's own final val loss {own:.6f} differs from the score "
                           f"{scored['loss']:.6f}: the scorer is not scoring APT's val split")
    out = {"arm": arm, "pair": i, "wall": wall, "cpu": cpu, "load": load, **scored}
    if args.gpu:
        shape = (2, 64, 4) if args.rehearse else (6, 384, 64)  # layers, d_model, batch
        flops = flops_per_token(layers=shape[0], d_model=shape[1], block=GPU_BLOCK, vocab=len(args.chars))
        out.update(gpu_stats(arm, log, run_dir, tokens_per_iter=shape[2] * GPU_BLOCK, flops=flops))
    return out


def print_results(results: list[dict[str, Any]], presets: list[str], goal: float) -> bool:
    """The per-run table, per-pair ratios and medians; returns whether the goal is met."""
    print(f"\n{'pair':>4s}  {'arm':22s} {'wall s':>8s} {'CPU s':>8s} {'load':>5s} {'val loss':>9s} "
          f"{'± se':>7s} {'step':>5s} {'wall / nanoGPT':>14s} {'CPU / nanoGPT':>13s}")
    pairs = sorted({r["pair"] for r in results})
    by = {(r["pair"], r["arm"]): r for r in results}
    gpu = "ms_iter" in results[0]
    if gpu:
        print(f"{'':4s}  {'':22s} {'ms/iter':>8s} {'tokens/s':>10s} {'MFU %':>6s} {'peak MiB':>9s} "
              f"{'ms/iter / nanoGPT':>17s}")
    for i in pairs:
        base = by[(i, "nanogpt")]
        for arm in ["nanogpt", *presets]:
            r = by[(i, arm)]
            ratio = "" if arm == "nanogpt" else f"{r['wall'] / base['wall']:14.3f} {r['cpu'] / base['cpu']:13.3f}"
            print(f"{i:4d}  {arm:22s} {r['wall']:8.1f} {r['cpu']:8.1f} {r['load']:5.1f} {r['loss']:9.4f} "
                  f"{r['se']:7.4f} {r['step']:5d} {ratio}")
            if gpu:
                print(f"{'':4s}  {'':22s} {r['ms_iter']:8.2f} {r['tokens_s']:10.0f} {100 * r['mfu']:6.2f} "
                      f"{r['peak_mb']:9.1f} {r['ms_iter'] / base['ms_iter']:17.3f}")
    nano_loss = statistics.median(by[(i, "nanogpt")]["loss"] for i in pairs)
    nano_wall = statistics.median(by[(i, "nanogpt")]["wall"] for i in pairs)
    print(f"\nmedians over {len(pairs)} pair(s): nanoGPT wall {nano_wall:.1f} s, val loss {nano_loss:.4f}")
    met = True
    for arm in presets:
        ratio = statistics.median(by[(i, arm)]["wall"] / by[(i, "nanogpt")]["wall"] for i in pairs)
        cpu_ratio = statistics.median(by[(i, arm)]["cpu"] / by[(i, "nanogpt")]["cpu"] for i in pairs)
        wall = statistics.median(by[(i, arm)]["wall"] for i in pairs)
        loss = statistics.median(by[(i, arm)]["loss"] for i in pairs)
        ok = ratio <= goal and loss <= nano_loss
        met = met and ok
        print(f"{arm}: wall {wall:.1f} s, ratio {ratio:.3f} (CPU time {cpu_ratio:.3f}), val loss {loss:.4f} "
              f"({loss - nano_loss:+.4f} vs nanoGPT) -> goal (ratio <= {goal}, loss <= nanoGPT's) "
              f"{'met' if ok else 'NOT met'}")
    return met


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="alternating nanoGPT/APT pairs (default 3)")
    ap.add_argument("--presets", nargs="+", default=["shakespeare_fast"], help="APT experiment presets")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of every run (OMP_NUM_THREADS, trainer.threads); default: the CPUs")
    ap.add_argument("--steps", type=int, default=None, help="shorten every run to this many steps (smoke test)")
    ap.add_argument("--data", type=Path, default=DATA, help="tinyshakespeare.txt (default: $APT_SHAKESPEARE)")
    ap.add_argument("--anchor", type=Path, default=ANCHOR, help="nanoGPT's directory (read only)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, checkpoints)")
    ap.add_argument("--goal", type=float, default=0.5, help="wall-time ratio the presets must reach")
    ap.add_argument("--gpu", action="store_true",
                    help="nanoGPT's GPU config vs experiment=shakespeare_gpu and shakespeare_gpu_fast")
    ap.add_argument("--scale", type=float, default=None, help="--gpu: cut every run's length by this factor")
    ap.add_argument("--rehearse", action="store_true", help="--gpu on the CPU, small (numbers mean nothing)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    args = ap.parse_args(argv)
    if args.gpu and args.presets == ["shakespeare_fast"]:
        args.presets = ["shakespeare_gpu", "shakespeare_gpu_fast"]
    problems = []
    if args.pairs < 1:
        problems.append(f"--pairs must be >= 1, got {args.pairs}")
    if args.threads < 1:
        problems.append(f"--threads must be >= 1, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        problems.append(f"--steps must be >= 1, got {args.steps}")
    if args.scale is not None and not (args.gpu and 0 < args.scale <= 1):
        problems.append(f"--scale needs --gpu and a factor in (0, 1], got {args.scale}")
    if args.scale is not None and args.steps is not None:
        problems.append("--scale and --steps both set a run's length: give one")
    if args.rehearse and not args.gpu:
        problems.append("--rehearse rehearses --gpu: give both")
    if not args.data.is_file():
        problems.append(f"--data {args.data} is not a file (set APT_SHAKESPEARE or give --data)")
    if not (args.anchor / "train.py").is_file() or not (args.anchor / "model.py").is_file():
        problems.append(f"--anchor {args.anchor} has no nanoGPT train.py and model.py")
    if problems:
        ap.error("; ".join(problems))
    args.data, args.anchor = args.data.resolve(), args.anchor.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:  # internal: python bench_nanogpt.py score KIND CKPT VAL.npy ANCHOR
        kind, ckpt, tokens, anchor, block = argv[1:6]
        data = np.load(tokens, allow_pickle=False)
        chars = str(np.load(Path(tokens).with_suffix(".chars.npy"), allow_pickle=False))
        print(json.dumps(score_checkpoint(kind, Path(ckpt), data, chars, Path(anchor), int(block))))
        return 0
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="bench_nanogpt_")) if args.workdir is None else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        nano_dir = prepare_nanogpt(args.anchor, args.data, work)
        tokens, chars = apt_val_tokens(args.data.read_text(encoding="utf-8"))
        args.chars = chars
        np.save(work / "val.npy", tokens)
        np.save(work / "val.chars.npy", np.array(chars))
        from apt.data import load_dataset

        load_dataset({"name": "text", "path": str(args.data), "tokenizer": "char"})  # APT's token cache
        subprocess.run([sys.executable, "-c", "import torch, numpy"], check=True)  # warm the page cache
        print(f"scratch {work}; {args.threads} thread(s); scored: {len(tokens):,} val characters "
              f"({len(tokens) - 1:,} targets) in {GPU_BLOCK if args.gpu else BLOCK}-character windows", flush=True)
        results = []
        arms = ["nanogpt", *args.presets]
        for i in range(1, args.pairs + 1):
            for arm in (arms if i % 2 else arms[::-1]):
                r = run_arm(arm, i, args, work, nano_dir)
                results.append(r)
                print(f"pair {i} {arm}: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, load {r['load']:.1f}, "
                      f"val {r['loss']:.4f} (step {r['step']})", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        met = print_results(results, args.presets, args.goal)
        print(f"goal {'met' if met else 'NOT met'}")
        return 0
    finally:
        if args.keep or args.workdir is not None:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
