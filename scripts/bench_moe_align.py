"""Dense vs ``moe``, ``align``, ``moe+align`` and ``autopoietic`` attention, over seeds, at equal steps and time.

    python scripts/bench_moe_align.py                      # 3 seeds x 5 arms x 2000 steps, 1 thread
    python scripts/bench_moe_align.py --steps 1000         # fewer steps, every arm alike
    python scripts/bench_moe_align.py --steps 8 --seeds 1,2 --arms dense,moe   # does it run

Every arm is ``apt.app.run`` on ``experiment=shakespeare_ref`` (tiny-shakespeare, char-level,
4 layers x 4 heads x 128 dims, block 64, batch 12, AdamW lr 1e-3, warmup/cosine), split into
4 epochs of ``steps / 4`` so the schedule can switch plugins by epoch (as ``schedule=moe_align``
does). Arms differ only in what is named here; a seed gives every arm the same batches.

- ``dense``: no plugins, ``provider/attention=sdpa`` (the config's default). It is the
  baseline of both comparisons: the MoE/align arms differ from it in plugins only, the
  ``autopoietic`` arm in the attention provider only, so it *is* the ``sdpa`` arm;
- ``moe``: upcycled to 4 experts (top-2, dropless) at the start of epoch 2, router
  temperature 1.5 -> 0.8 by epoch;
- ``align``: EMA-teacher KL alignment from epoch 3;
- ``moe+align``: both, i.e. ``plugin=[moe,align] schedule=moe_align``;
- ``autopoietic``: ``provider/attention=autopoietic`` (SDPA plus a gated low-rank
  self-perturbation; its extra parameters are printed).

Runs are interleaved seed-major (every arm of seed 1, then of seed 2, ...) with
``trainer.threads=1`` (``--threads``), so a change in the machine's load hits all arms of a
seed alike; the 1-minute load average is recorded at the start and end of every run.

Three comparisons, each a table of mean +- 95% CI over seeds per arm and the seed-paired
difference vs ``dense`` (its 95% CI and paired t-test p-value), computed by
:func:`apt.sweeps.grouped.grouped_stats` (statistics from :mod:`apt.sweeps.stats`):

- **equal steps**: the final val loss after ``steps`` optimizer steps, scored on the whole
  val split (``trainer.eval_tokens=all``), as every run reports it;
- **equal wall time**: the val loss each arm has reached when its training time equals the
  ``dense`` run's of the same seed (its budget). Training time is time inside the training
  loop (``on_train_begin`` on) minus every evaluation, so evaluating does not eat the budget.
  A hook on ``on_step_end`` scores the whole val split at the first step whose training time
  reaches the budget (overshoot under one step) and lets the run go on; the evaluation
  changes nothing in the run (tested). An arm that finishes its steps within the budget
  (faster than dense) is scored at its last step and flagged: it had time to spare;
- **equal CPU time**: the same with this process's CPU time as the clock. On a machine
  shared with other jobs the wall time of a run measures its neighbours as much as the arm
  (the dense run of a seed may run at load 5 and the next arm at load 2); with one thread the
  CPU time is what the wall time would be with a core to itself, and it moves far less with
  load (not at all only on a quiet machine: contention also slows what does run). On a quiet
  machine the two agree; where they differ, the CPU-time table is the better guide to one.

What the equal-time numbers mean: the arm's ``steps``-step recipe stopped when dense finished,
so a slower arm is caught mid-schedule (learning rate not yet annealed, later epochs' plugins
not yet on or short-lived). That is the loss a researcher gets from that run at that time; a
recipe re-tuned to the budget (fewer steps, full anneal) could do better, so it is a lower
bound on what the arm can do in dense's time, not the arm's best.

Also reported: training seconds and ms per step (wall, mean +- CI), wall and CPU time vs
dense, the distinct parameter elements at the end (upcycling multiplies the FFN
parameters), every run's numbers with the load average, and ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apt.sweeps.grouped import ConfigStats, fmt_stat, grouped_stats  # noqa: E402
from apt.sweeps.stats import mean_ci  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("APT_SHAKESPEARE", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
ROUTE_TEMP = "{start: 1.5, end: 0.8, by: epoch}"
BASELINE = "dense"
ARMS: dict[str, list[str]] = {
    "dense": ["plugin=[]", "schedule=default"],
    "moe": ["plugin=[moe]", "schedule=default", "+schedule.enable_moe_at_epoch=2",
            f"+schedule.route_temp={ROUTE_TEMP}"],
    "align": ["plugin=[align]", "schedule=default", "+schedule.enable_align_at_epoch=3"],
    "moe+align": ["plugin=[moe,align]", "schedule=moe_align"],
    "autopoietic": ["plugin=[]", "schedule=default", "provider/attention=autopoietic"],
}


#: The clocks a budget can be set on: wall time, and this process's CPU time (with one thread
#: it is what the wall time would be with the CPU to itself, and it hardly moves with load).
CLOCKS: dict[str, Any] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Point:
    """Where a run stood when its training time reached a budget (or at its end)."""

    step: int
    val: float  # whole-split val loss of the model after ``step``
    seconds: float  # training time at that step, on the budget's clock
    spare: bool  # all steps done within the budget: scored at the last step, time to spare


@dataclass
class RunResult:
    """One arm at one seed: the final evaluation, the evaluations at the budgets, times, load."""

    arm: str
    seed: int
    steps: int
    val: float
    val_se: float | None
    seconds: dict[str, float]  # clock -> training time to the last step, evaluations excluded
    params: int
    budget: dict[str, float]  # clock -> the dense run's seconds at this seed (empty: this is that run)
    at: dict[str, Point]  # clock -> the evaluation at the budget
    load: tuple[float, float]  # 1-minute load average at start and end


class BudgetProbe:
    """Hooks that time training on each clock (evaluations excluded) and score the val split at budgets.

    Registered on the run's hook manager (no plugin, so the config is the arm's own). Every
    evaluation, the trainer's and the probe's, pauses the clocks.
    """

    def __init__(self, budget: dict[str, float] | None = None) -> None:
        self.budget = dict(budget or {})
        self.at: dict[str, tuple[int, float, float]] = {}  # clock -> (step, val loss, seconds)
        self.final: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._paused = dict.fromkeys(CLOCKS, 0.0)
        self._pause_at: dict[str, float] | None = None

    def register(self, hook_manager: Any) -> None:
        for event in ("on_train_begin", "on_step_end", "on_validation_begin", "on_validation_end"):
            hook_manager.register(event, getattr(self, event), name=f"bench_{event}")

    def elapsed(self) -> dict[str, float]:
        return {k: clock() - self._start[k] - self._paused[k] for k, clock in CLOCKS.items()}

    def _pause(self) -> None:
        self._pause_at = {k: clock() for k, clock in CLOCKS.items()}

    def _resume(self) -> None:
        if self._pause_at is not None:
            for k, clock in CLOCKS.items():
                self._paused[k] += clock() - self._pause_at[k]
            self._pause_at = None

    def on_train_begin(self, **_: Any) -> None:
        self._start = {k: clock() for k, clock in CLOCKS.items()}

    def on_step_end(self, trainer: Any, step: int, **_: Any) -> None:
        due = [k for k, b in self.budget.items() if k not in self.at]
        if not due:
            return
        now = self.elapsed()
        due = [k for k in due if now[k] >= self.budget[k]]
        if due:
            self._pause()
            loss = trainer.evaluate_split(trainer.val_loader.tokens).loss  # the whole split, as the final eval
            self._resume()
            self.at.update({k: (step, loss, now[k]) for k in due})

    def on_validation_begin(self, **_: Any) -> None:
        self._pause()

    def on_validation_end(self, metrics: dict[str, Any], **_: Any) -> None:
        self._resume()
        if metrics.get("final"):
            self.final = self.elapsed()


def compose(overrides: list[str]):
    from apt.compose import compose as apt_compose

    return apt_compose(overrides)


def final_params(out: Path) -> int:
    """Distinct parameter elements in the last checkpoint (tied weights once)."""
    from apt.training.checkpoint import CheckpointManager

    found = CheckpointManager(out / "checkpoints").load_latest()
    if found is None:
        return 0
    seen, total = set(), 0
    for tensor in found[1]["model"].values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.is_floating_point() and key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def run_arm(arm: str, seed: int, common: list[str], budget: dict[str, float] | None = None) -> RunResult:
    """Train ``arm`` at ``seed``; score it where its training time reaches ``budget`` (clock -> seconds)."""
    from apt.app import new_plugin_manager, run

    cfg = compose([*common, f"seed={seed}", *ARMS[arm]])
    manager = new_plugin_manager()
    probe = BudgetProbe(budget)
    probe.register(manager.hook_manager)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        val = run(cfg, out_dir=out, plugin_manager=manager)
        summary = json.loads((out / "summary.json").read_text())
        params = final_params(out)
    if not probe.final:
        raise RuntimeError(f"{arm} seed {seed}: the final evaluation never reached the probe")
    steps = int(summary["step"])
    at = {k: Point(*probe.at[k], spare=False) if k in probe.at else Point(steps, val, probe.final[k], spare=True)
          for k in probe.budget}
    return RunResult(arm=arm, seed=seed, steps=steps, val=val, val_se=summary["val_loss_se"],
                     seconds=probe.final, params=params, budget=probe.budget, at=at,
                     load=(load0, os.getloadavg()[0]))


def run_all(arms: list[str], seeds: list[int], common: list[str], *, log: Any = sys.stderr) -> list[RunResult]:
    """Every arm at every seed, seed-major; ``dense`` first in a seed, its times the others' budgets."""
    results = []
    for seed in seeds:
        budget: dict[str, float] = {}
        for arm in arms:
            t0 = time.perf_counter()
            print(f"seed {seed} {arm} ... (load {os.getloadavg()[0]:.2f})", file=log, flush=True)
            r = run_arm(arm, seed, common, None if arm == BASELINE else budget)
            if arm == BASELINE:
                budget = dict(r.seconds)
            at = ", ".join(f"{k} budget: step {p.step} val {p.val:.4f}" for k, p in r.at.items())
            print(f"  val {r.val:.4f}, train {r.seconds['wall']:.1f}s wall {r.seconds['cpu']:.1f}s cpu"
                  f"{'; ' + at if at else ''} ({time.perf_counter() - t0:.0f}s in all)", file=log, flush=True)
            results.append(r)
    return results


def at_budget(r: RunResult, clock: str) -> Point:
    """The run's point at ``clock``'s budget; dense (the budget) at its own end."""
    return r.at.get(clock) or Point(r.steps, r.val, r.seconds[clock], spare=False)


def stats(results: list[RunResult], value: Callable[[RunResult], float]) -> list[ConfigStats]:
    """Per-arm mean +- CI of ``value(run)`` and the seed-paired difference vs dense (apt.sweeps.grouped)."""
    jobs = [(i, [*ARMS[r.arm], f"seed={r.seed}"], "completed", value(r)) for i, r in enumerate(results)]
    groups = grouped_stats(jobs)  # the first configuration is the baseline: run_all runs dense first
    names = {tuple(ARMS[a]): a for a in ARMS}
    for g in groups:
        g.config = names[g.key]
    if groups and groups[0].config != BASELINE:
        raise ValueError(f"the first run must be {BASELINE!r} (the baseline), got {groups[0].config!r}")
    return groups


def _pm(mean: float | None, ci: float | None, fmt: str) -> str:
    return fmt_stat(mean, fmt) + (f" ± {fmt_stat(ci, fmt.lstrip('+'))}" if ci is not None else "")


def _runs(results: list[RunResult], arm: str) -> list[RunResult]:
    return [r for r in results if r.arm == arm]


def _delta(g: ConfigStats) -> str:
    return "baseline" if g.baseline else _pm(g.delta_vs_baseline, g.delta_ci95, "+.4f")


def equal_steps_table(results: list[RunResult]) -> str:
    dense = {k: mean_ci([r.seconds[k] for r in _runs(results, BASELINE)])[0] for k in CLOCKS}
    lines = ["| arm | params | n | final val loss | Δ vs dense | p | train s (wall) | ms/step (wall) "
             "| wall vs dense | cpu vs dense |",
             "|---|---:|---:|---|---|---:|---|---|---:|---:|"]
    for g in stats(results, lambda r: r.val):
        runs = _runs(results, g.config)
        secs = {k: [r.seconds[k] for r in runs] for k in CLOCKS}
        params = "/".join(f"{p / 1e6:.3f}M" for p in sorted({r.params for r in runs}))
        lines.append(f"| {g.config} | {params} | {g.n} | {_pm(g.val_loss_mean, g.val_loss_ci95, '.4f')} "
                     f"| {_delta(g)} | {fmt_stat(g.p_value, '.3g')} | {_pm(*mean_ci(secs['wall']), '.1f')} "
                     f"| {_pm(*mean_ci([1e3 * r.seconds['wall'] / r.steps for r in runs]), '.1f')} "
                     f"| {mean_ci(secs['wall'])[0] / dense['wall']:.2f}x | {mean_ci(secs['cpu'])[0] / dense['cpu']:.2f}x |")
    return "\n".join(lines) + "\n"


def equal_time_table(results: list[RunResult], clock: str) -> str:
    lines = [f"| arm | n | budget: dense {clock} s | step at budget | val loss at budget | Δ vs dense | p |",
             "|---|---:|---|---|---|---|---:|"]
    budgets = [r.seconds[clock] for r in _runs(results, BASELINE)]
    for g in stats(results, lambda r: at_budget(r, clock).val):
        points = [at_budget(r, clock) for r in _runs(results, g.config)]
        steps = "/".join(f"{p.step}{'*' * p.spare}" for p in points)
        lines.append(f"| {g.config} | {g.n} | {_pm(*mean_ci(budgets), '.1f')} | {steps} "
                     f"| {_pm(g.val_loss_mean, g.val_loss_ci95, '.4f')} | {_delta(g)} | {fmt_stat(g.p_value, '.3g')} |")
    return "\n".join(lines) + "\n"


def runs_table(results: list[RunResult]) -> str:
    lines = ["| seed | arm | final val loss ± se | train s wall/cpu | at wall budget: step, val "
             "| at cpu budget: step, val | load start/end |",
             "|---:|---|---|---|---|---|---|"]
    for r in results:
        cells = [f"{p.step}{'*' * p.spare}, {p.val:.4f}" for p in (at_budget(r, k) for k in CLOCKS)]
        lines.append(f"| {r.seed} | {r.arm} | {_pm(r.val, r.val_se, '.4f')} "
                     f"| {r.seconds['wall']:.1f}/{r.seconds['cpu']:.1f} | {' | '.join(cells)} "
                     f"| {r.load[0]:.2f}/{r.load[1]:.2f} |")
    return "\n".join(lines) + "\n"


def report(results: list[RunResult], header: str) -> str:
    """The tables, Markdown, with the lines that say how to read them."""
    parts = [header, "",
             "Mean ± 95% CI over seeds (t distribution, n - 1 df); Δ: mean of the per-seed differences "
             "arm - dense (paired by seed) ± its 95% CI, p: two-sided paired t-test "
             "(apt.sweeps.grouped). `dense` is the sdpa arm of the attention pair.", "",
             "Equal steps (final val loss, whole val split; training time excludes evaluations):", "",
             equal_steps_table(results)]
    for clock, what in (("wall", "wall time"), ("cpu", "CPU time (this process's, 1 thread)")):
        parts += [f"Equal {what}: whole val split at the first step whose training time reaches the dense "
                  "run's of the same seed (* = finished within the budget, scored at its last step):", "",
                  equal_time_table(results, clock)]
    parts += ["Runs:", "", runs_table(results)]
    extra = {a: sorted({r.params for r in _runs(results, a)}) for a in ("dense", "autopoietic")}
    if all(extra.values()):
        parts.append(f"autopoietic attention adds {extra['autopoietic'][0] - extra['dense'][0]:,} parameters "
                     f"to dense's {extra['dense'][0]:,}.\n")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per run (4 epochs)")
    parser.add_argument("--seeds", default="1337,1338,1339", help="comma-separated seeds")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}; "
                        "must include dense")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="tiny-shakespeare text file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    parser.add_argument("--eval-batches", type=int, default=50, help="periodic (epoch-end) evaluations' batches")
    parser.add_argument("--json", default=None, help="also write every run's numbers to this file")
    parser.add_argument("--override", action="append", default=[], help="extra override for every arm")
    args = parser.parse_args(argv)
    if args.steps < 4 or args.steps % 4:
        parser.error(f"--steps must be a positive multiple of 4 (4 epochs of equal length), got {args.steps}")
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    if BASELINE not in args.arms:
        parser.error(f"--arms must include {BASELINE!r} (the baseline and the time budget), got {args.arms}")
    args.arms = [BASELINE] + [a for a in args.arms if a != BASELINE]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    return args


def common_overrides(args: argparse.Namespace) -> list[str]:
    return ["experiment=shakespeare_ref", f"data.path={Path(args.data).resolve()}",
            f"trainer.max_steps={args.steps}", "trainer.max_epochs=4", f"trainer.steps_per_epoch={args.steps // 4}",
            f"trainer.eval_every={args.steps}", f"trainer.eval_batches={args.eval_batches}",
            "trainer.eval_tokens=all", f"trainer.log_every={max(1, args.steps // 20)}",
            f"trainer.device={args.device}", f"trainer.threads={args.threads}",
            "trainer.progress=false", "trainer.plot=false", *args.override]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    common = common_overrides(args)
    for arm in args.arms:
        compose([*common, *ARMS[arm]])  # fail on a bad override before the first run
    t0, load0 = time.time(), os.getloadavg()
    results = run_all(args.arms, args.seeds, common)
    minutes = (time.time() - t0) / 60
    header = (f"{args.steps} steps (4 epochs of {args.steps // 4}), seeds {args.seeds}, device {args.device}, "
              f"{args.threads} thread(s); {minutes:.1f} min from "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t0))}, load average (1/5/15 min) "
              f"{'/'.join(f'{x:.2f}' for x in load0)} at start, "
              f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} at end")
    print(report(results, header))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
