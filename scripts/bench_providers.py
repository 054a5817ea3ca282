"""Forward+backward time and peak memory of one layer per attention and FFN provider, on CPU.

    python scripts/bench_providers.py                 # all providers, small and medium sizes
    python scripts/bench_providers.py --sizes small --providers attention:sdpa ffn:moe

Each case runs in its own subprocess so that memory numbers do not leak between cases.
What is measured:

- time: median wall time of ``loss = (layer(x) * g).sum(); loss.backward()`` over
  ``--iters`` repetitions after ``--warmup`` ones (one layer, not a whole block);
- memory: the peak resident set size (``ru_maxrss``) after the first forward+backward in a
  fresh process minus the resident size just before it, i.e. the extra memory one training
  step of this layer needs (activations saved for backward, gradients, temporaries, plus
  one-time allocator/oneDNN scratch). It is page-granular; "<=" marks a case whose step
  did not raise the process's earlier peak, so the true figure is at most that.

``flash`` is left out on machines without CUDA: there it falls back to SDPA and would only
measure SDPA again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SIZES = {  # name: (batch, seq_len, d_model, num_heads)
    "small": (8, 64, 128, 4),
    "medium": (8, 256, 512, 8),
}
PROVIDERS = [
    ("attention", "sdpa", {}),
    ("attention", "naive", {}),
    ("attention", "autopoietic", {}),
    ("attention", "flash", {}),
    ("ffn", "mlp", {}),
    ("ffn", "swiglu", {}),
    ("ffn", "moe", {"num_experts": 8, "top_k": 2}),
]


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    """Lifetime peak resident set size, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(kind: str, name: str, options: dict, size: str, iters: int, warmup: int, threads: int) -> dict:
    import torch

    from apt.core.registry import registry
    from apt.modeling.selection import call_provider

    torch.set_num_threads(threads)
    B, T, C, H = SIZES[size]
    torch.manual_seed(0)
    provider = registry.get(kind, name, options)
    if kind == "attention":
        layer = call_provider(provider.create_layer, C, H, 0.0, max_seq_len=T, owner=name)
    else:
        layer = call_provider(provider.create_layer, C, 4 * C, 0.0, owner=name)
    x = torch.randn(B, T, C, requires_grad=True)
    g = torch.randn(B, T, C)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        (layer(x) * g).sum().backward()

    # Memory first, on a fresh process: the resident size now, then the lifetime peak after
    # one step (ru_maxrss cannot be reset, so warm-up steps would hide the step's peak).
    before = _rss_mib()
    peak_before = _maxrss_mib()
    step()
    peak = _maxrss_mib()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "kind": kind, "name": name, "size": size, "shape": f"B{B} T{T} C{C} H{H}",
        "ms": 1000 * statistics.median(times), "ms_min": 1000 * min(times),
        "extra_mib": max(0.0, peak - before), "peak_raised": peak > peak_before, "params": sum(p.numel() for p in layer.parameters()),
    }


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--providers", nargs="+", help="kind:name entries, e.g. attention:sdpa ffn:mlp")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)

    if args.case:
        kind, name, size, options = json.loads(args.case)
        print(json.dumps(run_case(kind, name, options, size, args.iters, args.warmup, args.threads)))
        return

    wanted = set(args.providers or [])
    cases = [(k, n, o) for k, n, o in PROVIDERS if not wanted or f"{k}:{n}" in wanted]
    if not _cuda_available():
        cases = [c for c in cases if c[1] != "flash"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads per case: {args.threads}, iters={args.iters}")
    header = f"| {'kind':9} | {'provider':11} | {'size':6} | {'shape':18} | {'params':>10} | " \
             f"{'fwd+bwd ms (median)':>19} | {'min ms':>7} | {'extra RSS MiB':>13} |"
    print(header)
    print("|" + "|".join("-" * (len(col) + 0) for col in header.split("|")[1:-1]) + "|")
    for size in args.sizes:
        for kind, name, options in cases:
            cmd = [sys.executable, __file__, "--case", json.dumps([kind, name, size, options]),
                   "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"| {kind:9} | {name:11} | {size:6} | failed: {out.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mem = f"{r['extra_mib']:.1f}" if r["peak_raised"] else f"<= {r['extra_mib']:.1f}"
            print(f"| {kind:9} | {name:11} | {size:6} | {r['shape']:18} | {r['params']:>10,} | "
                  f"{r['ms']:>19.2f} | {r['ms_min']:>7.2f} | {mem:>13} |")


if __name__ == "__main__":
    main()
