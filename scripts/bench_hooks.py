"""Cost of firing an event through the plugin system vs calling the hooks directly.

    python scripts/bench_hooks.py [--events N] [--repeat R]

For 0, 1, 10 and 100 no-op hooks (each accepting ``**kwargs``) on one event, prints the
microseconds per event of ``PluginManager.trigger_event`` and of a plain loop calling the
same functions with the same keywords, and their ratio. Each figure is the best of
``--repeat`` runs, which filters out most of the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
from time import perf_counter

from apt.core import Registry
from apt.plugins import HookManager, PluginManager


def _make_hooks(n: int) -> list:
    # Distinct function objects: the hook manager de-duplicates identical callables.
    return [(lambda **kw: None) for _ in range(n)]


def _best(fn, events: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = perf_counter()
        fn(events)
        best = min(best, perf_counter() - t0)
    return best / events * 1e6


def bench(n: int, events: int, repeat: int) -> tuple[float, float]:
    hooks = _make_hooks(n)
    pm = PluginManager(registry=Registry(), hook_manager=HookManager(), entry_points=False)
    for h in hooks:
        pm.hook_manager.register("on_step_end", h)
    trigger = pm.trigger_event

    def via_manager(k: int) -> None:
        for _ in range(k):
            trigger("on_step_end", epoch=1, step=10, loss=0.5)

    def direct(k: int) -> None:
        for _ in range(k):
            for h in hooks:
                h(epoch=1, step=10, loss=0.5)

    return _best(via_manager, events, repeat), _best(direct, events, repeat)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000, help="events per timed run")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per row (best is kept)")
    args = ap.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"{args.events} events x best of {args.repeat}; hooks are no-op lambdas taking **kwargs\n")
    print("| hooks | trigger_event µs/event | direct calls µs/event | ratio |")
    print("|------:|-----------------------:|----------------------:|------:|")
    for n in (0, 1, 10, 100):
        events = max(200, args.events // max(1, n // 10))
        via, direct = bench(n, events, args.repeat)
        ratio = f"{via / direct:.1f}x" if direct > 0.005 else "-"
        print(f"| {n:5d} | {via:22.2f} | {direct:21.2f} | {ratio:>5} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
