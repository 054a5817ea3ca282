"""Token shards: training memory on a 600 MB shard, prepare throughput, batch cost.

    python scripts/bench_tokens.py                      # all three parts (~10 min on 2 cores)
    python scripts/bench_tokens.py --parts memory       # or prepare, batches; comma-separated
    python scripts/bench_tokens.py --work /tmp/bench    # where the generated files go (deleted after)

memory   Writes a 600 MB uint16 shard of random ids (in 16M-id chunks, never whole in memory)
         and a small one, trains the same short run on each with ``train.py data=tokens``
         in a subprocess, and prints the peak RSS of both (from wait4) and the difference.
prepare  Generates a ~100 MB text corpus (lines drawn from tinyshakespeare, else the stdlib
         sources), runs ``python -m apt.data.prepare tokenizer=bpe`` with 2 workers, then
         encodes it again with that tokenizer.json with 1 and 2 workers: tokens/s of each.
batches  Per-step cost of a batch (``epoch_rows`` + ``batch``) from an in-memory array
         (today's in-memory data), one memory-mapped shard, and four shards read as one,
         for the eager (small corpus) and the lazy (large corpus) epoch order.
Everything generated is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAKESPEARE = Path(os.environ.get("APT_SHAKESPEARE", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
CHUNK = 1 << 24  # ids generated and written per step


def write_random_dir(path: Path, n_train: int, n_val: int, *, shards: int = 1, seed: int = 0) -> None:
    """A valid token directory of random byte ids, written in chunks."""
    from apt.data import ByteTokenizer
    from apt.data.tokens import ShardWriter, write_meta

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, shard_tokens in (("train", n_train, -(-n_train // shards)), ("val", n_val, n_val)):
        writer = ShardWriter(path, split, "uint16", shard_tokens)
        for start in range(0, n, CHUNK):
            writer.write(rng.integers(0, 256, size=min(CHUNK, n - start), dtype=np.uint16))
        out[split] = writer.close()
    write_meta(path, {"name": path.name, "dtype": "uint16", "shards": {**out, "test": []},
                      "tokens": {"train": n_train, "val": n_val, "test": 0}}, ByteTokenizer())


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{out[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def bench_memory(work: Path) -> None:
    big, small = work / "big", work / "small"
    write_random_dir(big, 300_000_000, 1_000_000)  # 600 MB + 2 MB
    write_random_dir(small, 1_000_000, 1_000_000)
    run = [sys.executable, "train.py", "model=tiny", "data=tokens", "trainer.max_steps=200", "trainer.eval_every=100",
           "trainer.eval_batches=10", "trainer.progress=false", "trainer.plot=false", "trainer.device=cpu"]
    rows = []
    for name, path in (("small shard (2 MB)", small), ("600 MB shard", big)):
        size = sum(f.stat().st_size for f in path.glob("train-*.bin")) / 1e6
        rss, wall = peak_rss_mb([*run, f"data.dir={path}", f"hydra.run.dir={work / ('run-' + path.name)}"])
        rows.append((name, size, rss, wall))
    print("\n## memory: peak RSS of train.py data=tokens model=tiny trainer.max_steps=200")
    print(f"{'run':<22}{'train MB':>10}{'peak RSS MB':>13}{'wall s':>8}")
    for name, size, rss, wall in rows:
        print(f"{name:<22}{size:>10.0f}{rss:>13.1f}{wall:>8.1f}")
    print(f"difference (600 MB - small): {rows[1][2] - rows[0][2]:+.1f} MB (goal: within 50 MB)")


def make_corpus(path: Path, target_bytes: int) -> int:
    """~target_bytes of text in 1 MB files: lines drawn (seeded) from the source text."""
    src = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.is_file() else None
    if src is None:
        from apt.data.sources import read_stdlib, stdlib_files

        src = read_stdlib(stdlib_files(5_000_000))
    lines = np.array(src.splitlines(keepends=True), dtype=object)
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    total, i = 0, 0
    while total < target_bytes:
        text = "".join(lines[rng.integers(0, len(lines), size=25_000)])
        data = text.encode("utf-8")
        (path / f"part-{i:04d}.txt").write_bytes(data)
        total, i = total + len(data), i + 1
    return total


def prepare_run(args: list[str]) -> tuple[float, float, int, float]:
    """(wall s, CPU s of the command and its workers, tokens, tokens per wall s)."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "apt.data.prepare", *args, "progress=false"], cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    m = re.search(r": ([\d,]+) train / ([\d,]+) val / ([\d,]+) test tokens", p.stdout)
    tokens = sum(int(g.replace(",", "")) for g in m.groups())
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return wall, cpu, tokens, tokens / wall


def bench_prepare(work: Path) -> None:
    corpus = work / "corpus"
    n_bytes = make_corpus(corpus, 100_000_000)
    rows = [("bpe vocab 4096, fit + encode", 2, *prepare_run(
        [f"input={corpus}", f"out={work / 'p-bpe'}", "tokenizer=bpe", "vocab_size=4096", "workers=2"]))]
    tok = work / "p-bpe" / "tokenizer.json"
    for workers in (1, 2):
        rows.append(("that tokenizer.json, encode", workers, *prepare_run(
            [f"input={corpus}", f"out={work / f'p-json{workers}'}", f"tokenizer={tok}", f"workers={workers}"])))
    print(f"\n## prepare: {n_bytes / 1e6:.0f} MB corpus, {len(list(corpus.iterdir()))} files "
          "(wall time of the whole command, process start included)")
    print(f"{'run':<32}{'workers':>8}{'wall s':>9}{'CPU s':>8}{'tokens':>13}{'tokens/s':>12}")
    for name, workers, wall, cpu, tokens, rate in rows:
        print(f"{name:<32}{workers:>8}{wall:>9.1f}{cpu:>8.1f}{tokens:>13,}{rate:>12,.0f}")
    print(f"encode speed-up 2 workers / 1: {rows[2][5] / rows[1][5]:.2f}x (wall); CPU s 2 workers / 1: "
          f"{rows[2][3] / rows[1][3]:.2f} (a ratio near 1 means the work parallelises: on an idle machine "
          "the speed-up approaches the worker count)")


def bench_batches(work: Path, steps: int = 2000) -> None:
    import apt.data.loader as loader_mod
    from apt.data import BatchLoader, open_tokens_dir

    n = 50_000_000
    write_random_dir(work / "one", n, 100_000)
    write_random_dir(work / "four", n, 100_000, shards=4)
    mapped = open_tokens_dir(work / "one")[0]["train"]
    sources = {"in-memory array": np.array(mapped), "memmap, 1 shard": mapped,
               "memmap, 4 shards": open_tokens_dir(work / "four")[0]["train"]}
    print(f"\n## batches: us per step (epoch_rows + batch), batch 12 x block 64, {n / 1e6:.0f}M tokens, "
          f"{steps} steps, page cache warm")
    print(f"{'tokens':<20}{'eager order':>13}{'lazy order':>12}")
    for name, tokens in sources.items():
        cells = []
        for eager in (True, False):
            loader_mod.EAGER_WINDOWS = 1 << 40 if eager else 0
            loader = BatchLoader(tokens, batch_size=12, block_size=64, seed=1)
            loader.batch(loader.epoch_rows(1, 0, 1)[0])  # the eager order is drawn here, not timed
            t0 = time.perf_counter()
            for i in range(1, steps + 1):
                loader.batch(loader.epoch_rows(1, i, 1)[0])
            cells.append(1e6 * (time.perf_counter() - t0) / steps)
        print(f"{name:<20}{cells[0]:>13.1f}{cells[1]:>12.1f}")
    print("(eager: the epoch's whole order drawn once, then sliced; lazy: each step's rows computed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="memory,prepare,batches")
    parser.add_argument("--work", default=None, help="directory for generated files (default: a temp dir)")
    args = parser.parse_args()
    if args.work is not None:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="apt-bench-tokens-", dir=args.work))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; work dir {work}")
    try:
        for part in args.parts.split(","):
            {"memory": bench_memory, "prepare": bench_prepare, "batches": bench_batches}[part](work / part)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
