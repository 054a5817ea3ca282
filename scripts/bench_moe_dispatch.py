"""MoE dispatch on CPU: the old capacity dispatch against the new dropless dispatch, in one process.

    python scripts/bench_moe_dispatch.py                  # small and medium, 1 thread, ~2 min
    python scripts/bench_moe_dispatch.py --sizes small --reps 5

Sizes are those of scripts/bench_providers.py (one layer, 8 ``mlp`` experts of width 4C,
top-2). Arms, all on the same weights and inputs:

- ``capacity (old)``: the dispatch APT had before dropless routing, reproduced here as the
  baseline: capacity factor 1.25, assignments in priority order (one-hot cumsum), then per
  expert one gather, the expert module on its tokens and one ``index_add_`` (a host sync);
- ``dropless (new)``: :class:`apt.moe.MoELayer` as shipped: sort by expert, one gather,
  each expert on its contiguous slice, one weighted scatter-add, every assignment served
  (the old arm does less expert work whenever it drops assignments: the table says how many);
- ``capacity (new)``: the same layer with ``capacity_factor=1.25`` (the option that stays).

Each timed step is ``(layer(x) * g).sum().backward()`` with one torch thread, timed twice:
wall clock, and CPU time of the calling thread (``time.thread_time``; with one thread all of
torch's work runs there), which other processes on a shared machine disturb far less. The
arms alternate within every repetition (old, new, new-capacity, old, ...) so that drift hits
all of them alike; the table gives medians (and the CPU-time minimum) over repetitions and
the ratio of median CPU times to the old arm. Before timing, the script checks that the
dropless arm equals the old arm run with unlimited capacity.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apt.moe import MoELayer, TopKRouter  # noqa: E402
from apt.providers.ffn import MLP  # noqa: E402

SIZES = {"small": (8, 64, 128), "medium": (8, 256, 512)}  # (batch, seq_len, d_model), as bench_providers
EXPERTS, TOP_K, CAPACITY = 8, 2, 1.25


class OldCapacityMoE(nn.Module):
    """The pre-dropless dispatch, kept here only as this benchmark's baseline."""

    def __init__(self, experts: list[nn.Module], router: nn.Module, capacity_factor: float) -> None:
        super().__init__()
        self.experts, self.router, self.capacity_factor = nn.ModuleList(experts), router, capacity_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.reshape(-1, x.size(-1))  # (N, C)
        N, E, k = xf.size(0), len(self.experts), TOP_K
        r = self.router(xf)
        flat_expert = r.indices.t().reshape(-1)  # (k*N,) slot-major: priority order
        flat_token = torch.arange(N).repeat(k)
        flat_weight = r.weights.t().reshape(-1)
        onehot = F.one_hot(flat_expert, E)
        position = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1
        keep = position < max(1, math.ceil(self.capacity_factor * N * k / E))
        kept = keep.nonzero().squeeze(1)
        expert_of = flat_expert[kept]
        order = torch.argsort(expert_of, stable=True)
        tokens, weights = flat_token[kept][order], flat_weight[kept][order]
        counts = torch.bincount(expert_of, minlength=E).tolist()
        out = torch.zeros_like(xf)
        start = 0
        for expert, n in zip(self.experts, counts, strict=True):
            if n:
                idx = tokens[start:start + n]
                out.index_add_(0, idx, expert(xf[idx]) * weights[start:start + n, None])
                start += n
        return out.view(x.shape)


def build(C: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    experts = [MLP(C, 4 * C) for _ in range(EXPERTS)]
    router = TopKRouter(C, EXPERTS, top_k=TOP_K)  # nn.Linear's default init, as in bench_providers
    return {"capacity (old)": OldCapacityMoE(experts, router, CAPACITY),
            "dropless (new)": MoELayer(experts, router, TOP_K),
            "capacity (new)": MoELayer(experts, router, TOP_K, capacity_factor=CAPACITY)}


def check_equal(arms: dict[str, nn.Module], x: torch.Tensor) -> float:
    old = arms["capacity (old)"]
    with torch.no_grad():
        old.capacity_factor = float(EXPERTS)  # room for everything: the old arm is dropless too
        ref = old(x)
        old.capacity_factor = CAPACITY
        return float((arms["dropless (new)"](x) - ref).abs().max())


def bench(size: str, reps: int, warmup: int) -> None:
    B, T, C = SIZES[size]
    arms = build(C)
    x = torch.randn(B, T, C, requires_grad=True)
    g = torch.randn(B, T, C)
    diff = check_equal(arms, x)
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(warmup + reps):
        for name, layer in arms.items():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            t0, c0 = time.perf_counter(), time.thread_time()
            (layer(x) * g).sum().backward()
            if rep >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.thread_time() - c0)
    dropped = float(arms["capacity (new)"].last_stats["moe_dropped_frac"])
    base = statistics.median(cpu["capacity (old)"])
    for name in arms:
        med = statistics.median(cpu[name])
        print(f"| {size:6} | B{B} T{T} C{C} | {name:15} | {1e3 * statistics.median(wall[name]):9.2f} | "
              f"{1e3 * med:8.2f} | {1e3 * min(cpu[name]):8.2f} | {med / base:5.3f} |")
    print(f"|        | dropped at capacity {CAPACITY}: {100 * dropped:.1f}% of assignments; "
          f"max abs(dropless - old unlimited) = {diff:.1e} | | | | | |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per arm")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s), {EXPERTS} experts top-{TOP_K}, {args.reps} reps (arms alternate)")
    print("| size   | shape          | arm             | wall ms (median) | CPU ms (median) | CPU ms (min) | CPU ratio |")
    print("|--------|----------------|-----------------|------------------|-----------------|--------------|-----------|")
    for size in args.sizes:
        bench(size, args.reps, args.warmup)


if __name__ == "__main__":
    main()
