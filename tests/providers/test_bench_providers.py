"""scripts/bench_providers.py runs a case and reports time, memory and parameter count."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_providers.py"


def test_bench_case_reports_numbers():
    spec = importlib.util.spec_from_file_location("bench_providers", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run_case("ffn", "mlp", {}, "small", iters=2, warmup=0, threads=1)
    assert r["params"] == 2 * 128 * 512 and r["ms"] > 0 and r["extra_mib"] >= 0
    assert r["shape"] == "B8 T64 C128 H4"
