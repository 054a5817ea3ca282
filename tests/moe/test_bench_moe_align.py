"""scripts/bench_moe_align.py: the time-budget probe is exact and harmless, the tables are apt.sweeps'."""

from __future__ import annotations

import importlib.util
import io
import string
import sys
from pathlib import Path

import pytest

from apt.sweeps.stats import mean_ci, paired_t

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_moe_align.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_moe_align", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def common(bench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    text = tmp / "text.txt"
    words = [string.ascii_lowercase[i % 26:] + string.ascii_uppercase[:i % 7] for i in range(400)]
    text.write_text(" ".join(words * 3), encoding="utf-8")  # ~40k characters: a val split of a few windows
    args = bench.parse_args(["--steps", "8", "--data", str(text), "--eval-batches", "1",
                             "--override", "model=tiny", "--override", f"data.cache_dir={tmp / 'cache'}"])
    return bench.common_overrides(args)


def test_budget_evaluation_changes_nothing_and_stops_at_the_budget(bench, common):
    """Scoring at the budgets (here: after step 1) leaves the run's final loss exactly as it was."""
    free = bench.run_arm("moe+align", 1, common)
    probed = bench.run_arm("moe+align", 1, common, {"wall": 0.0, "cpu": 0.0})
    assert probed.val == free.val and probed.steps == free.steps == 8 and free.at == {}
    for point in probed.at.values():
        assert point.step == 1 and not point.spare and point.val != probed.val and point.seconds > 0
    assert bench.at_budget(free, "wall") == bench.Point(8, free.val, free.seconds["wall"], spare=False)
    late = bench.run_arm("align", 1, common, {"cpu": 1e9})  # never reached: scored at its last step, flagged
    assert list(late.at) == ["cpu"] and late.at["cpu"] == bench.Point(8, late.val, late.seconds["cpu"], spare=True)


def test_seed_major_runs_and_grouped_statistics(bench, common):
    results = bench.run_all(["dense", "autopoietic"], [1, 2], common, log=io.StringIO())
    assert [(r.arm, r.seed) for r in results] == [("dense", 1), ("autopoietic", 1), ("dense", 2), ("autopoietic", 2)]
    dense, auto = results[0::2], results[1::2]
    assert all(a.budget == d.seconds and set(a.at) == {"wall", "cpu"} for d, a in zip(dense, auto, strict=True))
    assert auto[0].params > dense[0].params
    groups = bench.stats(results, lambda r: r.val)
    assert [g.config for g in groups] == ["dense", "autopoietic"] and groups[0].baseline
    test = paired_t([r.val for r in auto], [r.val for r in dense])
    assert groups[1].delta_vs_baseline == pytest.approx(test.mean_diff)
    assert groups[1].delta_ci95 == pytest.approx(test.ci) and groups[1].p_value == pytest.approx(test.p_value)
    assert (groups[1].val_loss_mean, groups[1].val_loss_ci95) == pytest.approx(mean_ci([r.val for r in auto]))
    at_cpu = [bench.at_budget(r, "cpu").val for r in auto]
    assert bench.stats(results, lambda r: bench.at_budget(r, "cpu").val)[1].val_loss_mean == pytest.approx(
        sum(at_cpu) / 2)
    text = bench.report(results, "header")
    assert "| autopoietic | 2 |" in text and f"{auto[0].params - dense[0].params:,} parameters" in text
    assert "Equal wall time" in text and "Equal CPU time" in text
    with pytest.raises(ValueError, match="first run must be 'dense'"):
        bench.stats(results[1:], lambda r: r.val)


def test_arguments_are_checked(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--arms", "moe"])  # no dense: no baseline, no budget
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "10"])
    assert bench.parse_args(["--arms", "moe,dense"]).arms == ["dense", "moe"]
