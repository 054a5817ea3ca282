"""Wall time of the commands that only compose or check a config (no torch, no training).

    python scripts/bench_startup.py [--repeat 7]

Each command runs ``--repeat`` times as a fresh process; the table shows the best and the
median wall time, and the time of ``python -c pass`` (the interpreter alone) for scale.
The goal (docs/benchmarks.md, "Start-up"): every row well under a second.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "train.py --help": ["train.py", "--help"],
    "train.py --cfg job": ["train.py", "--cfg", "job", "model=tiny"],
    "train.py <refused: model=tinyy>": ["train.py", "model=tinyy"],
    "apt check (defaults)": ["-m", "apt", "check"],
    "apt check (plugins, providers)": ["-m", "apt", "check", "plugin=[early_stopping,logging,nan_guard]",
                                       "provider/attention=autopoietic", "data=synthetic"],
    "apt check (moe, align)": ["-m", "apt", "check", "plugin=[moe,align]", "schedule=moe_align"],
    "apt check (ffn=moe, switch)": ["-m", "apt", "check", "provider/ffn=moe", "provider/router=switch",
                                    "provider.ffn.top_k=1"],
}


def wall(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    print(f"{'command':34s} {'best s':>8s} {'median s':>9s}")
    for name, args in COMMANDS.items():
        times = [wall(args) for _ in range(repeat)]
        print(f"{name:34s} {min(times):8.3f} {statistics.median(times):9.3f}")


if __name__ == "__main__":
    main()
