"""kill -9 at every step boundary and inside every checkpoint write; every resume must be the uninterrupted run.

    python scripts/kill_resume.py                  # the CI scenario (tests/test_kill_resume.py runs it)
    python scripts/kill_resume.py --heavy          # issue #22's runs, every kind of kill point
    python scripts/kill_resume.py --json out.json  # also write the results as JSON

A scenario is a small run with MoE upcycling, EMA alignment, early stopping and an annealed
schedule (epochs of a few steps, a checkpoint every few steps). It is trained once
uninterrupted, which lists its kill points; then, for each point, a fresh run directory is
trained from scratch and the process SIGKILLs itself there (a real ``kill -9``: no handler,
no cleanup, files half written), and the run is resumed as the README says
(``train.py trainer.resume=true hydra.run.dir=D``). The resumed metrics.csv must equal the
uninterrupted one (header and column order included, the throughput column aside) and so
must summary.json (times and throughput aside).

Kill points (``--heavy`` has every kind; the default scenario the first three):

- ``step N``: as step N begins, so step N-1 is done with its evaluation, row, checkpoint and
  epoch end (a step boundary);
- ``save K mid``: inside the K-th checkpoint write, half of the file written (a temporary
  file that the next start deletes);
- ``save K renamed``: the K-th checkpoint is in place, older ones not yet pruned, its
  ``on_checkpoint_save`` hooks not yet run;
- ``stepped N``: step N's update done, its evaluation, row and checkpoint not yet.

Every run is a process forked from this one after it has imported torch and APT (and run no
torch operation), so a kill point costs a training run, not an interpreter start. Runs are
tiny (a 2-layer model of width 32, synthetic tokens, one thread each); ``--jobs`` runs that
many kill points at a time.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

BASE = ["model=tiny", "data=synthetic", "trainer=debug", "optim.warmup_steps=2", "trainer.threads=1",
        "data.num_tokens=3000", "plugin=[moe,align,early_stopping]", "schedule=moe_align",
        "+schedule.align_alpha={start: 0.1, end: 0.5, by: step}", "trainer.max_steps=null", "model.dropout=0.1"]

# Epochs of 3 steps, a checkpoint every 2: moe from step 4, align from step 7; validations at
# 3, 4, 6, 8, 9 and 12 never improve by min_delta after the first, so early stopping ends the
# run at the 6th, at step 12: the last step of epoch 4 (of 5), right after a checkpoint. The
# checkpoints of steps 2, 6 and 10 hold a half-filled metrics window; that of step 6 is
# written before epoch 2's end (its evaluation, row and on_epoch_end values).
LIGHT = [*BASE, "trainer.max_epochs=5", "trainer.steps_per_epoch=3", "trainer.log_every=4", "trainer.eval_every=4",
         "trainer.checkpoint_every=2", "trainer.keep_last=2", "plugin.early_stopping.patience=5",
         "plugin.early_stopping.min_delta=10.0"]

# Issue #22's runs: epochs of 10 steps, a checkpoint every 5, 4 epochs (40 steps; moe from
# step 11, align from step 21); and the same stopped early at step 30 (an epoch's last step).
HEAVY = {
    "issue22": [*BASE, "trainer.steps_per_epoch=10", "trainer.checkpoint_every=5"],
    "issue22-early-stopped": [*BASE, "trainer.steps_per_epoch=10", "trainer.checkpoint_every=5",
                              "plugin.early_stopping.patience=2", "plugin.early_stopping.min_delta=10.0"],
}

KINDS = ("step", "save-mid", "save-renamed", "stepped")
THROUGHPUT = {"tokens_per_s"}
TIMES = {"train_time_s", "eval_time_s", "final_eval_time_s", "tokens_per_s", "wall_s"}


@dataclass(frozen=True)
class Point:
    """Where a run kills itself: ``kind`` and the step (``step``, ``stepped``) or the ordinal
    of the checkpoint write (``save-*``, from 1)."""

    kind: str
    n: int
    step: int  # the step being run or saved

    def __str__(self) -> str:
        if self.kind.startswith("save"):
            return f"{self.kind} #{self.n} (step {self.step})"
        return f"{self.kind} {self.n}"


@dataclass
class Result:
    point: str
    killed: bool  # the run died by SIGKILL at the point
    resumed: bool  # the resume ended with exit status 0
    equal: bool
    differences: list[str] = field(default_factory=list)


# -- the runs (each in a forked process) ----------------------------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _instrument(kill: Point | None, trace: list[Point]) -> None:
    """Patch this (forked) process so it records its points in ``trace`` and dies at ``kill``."""
    import torch

    from apt.training import checkpoint as ckpt_module
    from apt.training.trainer import Trainer

    def at(point: Point) -> None:
        trace.append(point)
        if point == kill:
            _die()

    train_step = Trainer._train_step

    def _train_step(self: Trainer, rows: Any) -> None:
        at(Point("step", self.step + 1, self.step + 1))
        train_step(self, rows)
        at(Point("stepped", self.step, self.step))

    save_checkpoint, real_save = ckpt_module.save_checkpoint, torch.save
    saves = [0]

    def half_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        _die()

    def _save_checkpoint(state: dict[str, Any], path: Any) -> Any:
        saves[0] += 1
        step = int(Path(path).name[5:13])
        mid = Point("save-mid", saves[0], step)
        trace.append(mid)
        torch.save = half_save if mid == kill else real_save
        try:
            out = save_checkpoint(state, path)
        finally:
            torch.save = real_save
        at(Point("save-renamed", saves[0], step))
        return out

    Trainer._train_step = _train_step  # type: ignore[method-assign]
    ckpt_module.save_checkpoint = _save_checkpoint  # type: ignore[assignment]


def _fork(args: list[str], log: Path, kill: Point | None = None, trace_file: Path | None = None) -> int:
    """Start ``train.py args`` in a forked process (output to ``log``); returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        trace: list[Point] = []
        _instrument(kill, trace)
        from apt.cli.train import main

        try:
            status = main(args, prog="train.py")
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        if trace_file is not None:  # the points, and the modules a run imports (for the parent)
            trace_file.write_text(json.dumps({"points": [asdict(p) for p in trace], "modules": sorted(sys.modules)}),
                                  encoding="utf-8")
    except BaseException:  # noqa: BLE001 - report, never return into the parent's code
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _wait(pid: int) -> tuple[int | None, int | None]:
    """``(exit status, None)`` or ``(None, signal number)``."""
    _, status = os.waitpid(pid, 0)
    return (os.WEXITSTATUS(status), None) if os.WIFEXITED(status) else (None, os.WTERMSIG(status))


def _preload(modules: list[str]) -> None:
    """Import what a run imports, so each forked run starts with it (torch._dynamo alone takes
    seconds). Importing runs no torch operation, so forking stays safe."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            if name not in sys.modules and not name.startswith("__"):
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001, S112 - a module that cannot be imported on its own is skipped
                    continue


# -- what is compared ---------------------------------------------------------------------------
def metrics(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """metrics.csv's header and rows (throughput aside)."""
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: v for k, v in r.items() if k not in THROUGHPUT} for r in reader]
        return list(reader.fieldnames or []), rows


def summary(run_dir: Path) -> dict[str, Any]:
    """summary.json (times and throughput aside; the checkpoint by name)."""
    s = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    s["checkpoint"] = Path(s["checkpoint"]).name if s.get("checkpoint") else None
    return {k: v for k, v in s.items() if k not in TIMES}


def differences(full: Path, resumed: Path) -> list[str]:
    """What differs between two finished runs (empty: equal)."""
    if not (resumed / "summary.json").is_file():
        return ["no summary.json"]
    out = []
    (h1, r1), (h2, r2) = metrics(full), metrics(resumed)
    if h1 != h2:
        out.append(f"metrics.csv header {h2} != {h1}")
    if [r["step"] for r in r1] != [r["step"] for r in r2]:
        out.append(f"metrics.csv steps {[r['step'] for r in r2]} != {[r['step'] for r in r1]}")
    for a, b in zip(r1, r2, strict=False):
        diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        if diff:
            out.append(f"metrics.csv step {a['step']}: {diff} (uninterrupted, resumed)")
    s1, s2 = summary(full), summary(resumed)
    diff = {k: (s1.get(k), s2.get(k)) for k in s1.keys() | s2.keys() if s1.get(k) != s2.get(k)}
    if diff:
        out.append(f"summary.json: {diff} (uninterrupted, resumed)")
    return out


# -- a scenario -----------------------------------------------------------------------------------
def kill_points(trace: list[dict[str, Any]], kinds: tuple[str, ...]) -> list[Point]:
    return [p for p in (Point(**t) for t in trace) if p.kind in kinds]


def run_scenario(name: str, args: list[str], work: Path, kinds: tuple[str, ...], jobs: int,
                 only: str | None = None, echo: Any = print) -> tuple[list[Point], list[Result]]:
    """Train uninterrupted, then kill at each point and resume; returns the points and results."""
    work.mkdir(parents=True, exist_ok=True)
    common = [*args, f"data.cache_dir={work / 'cache'}"]
    full, trace_file = work / "full", work / "full.trace.json"
    status, _ = _wait(_fork([*common, f"hydra.run.dir={full}"], work / "full.log", trace_file=trace_file))
    if status != 0:
        raise SystemExit(f"{name}: the uninterrupted run failed (exit {status}); see {work / 'full.log'}")
    trace = json.loads(trace_file.read_text(encoding="utf-8"))
    _preload(trace["modules"])
    points = [p for p in kill_points(trace["points"], kinds) if only is None or only in str(p)]
    echo(f"{name}: {len(points)} kill points ({', '.join(k for k in kinds)})")
    results: dict[int, Result] = {}
    queue = list(enumerate(points))
    running: dict[int, tuple[int, str]] = {}  # pid -> (point index, phase)

    def start(i: int, phase: str) -> None:
        d = work / f"k{i:03d}"
        if phase == "kill":
            pid = _fork([*common, f"hydra.run.dir={d}"], work / f"k{i:03d}.kill.log", kill=points[i])
        else:
            pid = _fork(["trainer.resume=true", f"hydra.run.dir={d}"], work / f"k{i:03d}.resume.log")
        running[pid] = (i, phase)

    while queue or running:
        while queue and len(running) < jobs:
            start(queue.pop(0)[0], "kill")
        pid, status = os.wait()
        i, phase = running.pop(pid)
        if phase == "kill":
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            results[i] = Result(str(points[i]), killed, False, False)
            if killed:
                start(i, "resume")
            else:
                results[i].differences.append(f"the run was not killed (status {status}); see k{i:03d}.kill.log")
            continue
        r = results[i]
        r.resumed = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if not r.resumed:
            r.differences.append(f"the resume failed (status {status}); see k{i:03d}.resume.log")
        else:
            r.differences = differences(full, work / f"k{i:03d}")
        r.equal = r.killed and r.resumed and not r.differences
        echo(f"  {r.point:28s} {'equal' if r.equal else 'DIFFERENT: ' + '; '.join(r.differences)}")
    return points, [results[i] for i in range(len(points))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", action="store_true", help="issue #22's runs and every kind of kill point")
    parser.add_argument("--work", type=Path, default=None, help="run directories (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=1, help="kill points run at a time")
    parser.add_argument("--only", default=None, help="only the kill points whose name contains this")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    ns = parser.parse_args(argv)
    import tempfile

    import torch  # noqa: F401 - imported once, before forking

    import apt.cli.train  # noqa: F401
    import apt.training.trainer  # noqa: F401

    scenarios = HEAVY if ns.heavy else {"light": LIGHT}
    kinds = KINDS if ns.heavy else KINDS[:3]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="apt-kill-") as scratch:
        work = ns.work or Path(scratch)
        for name, args in scenarios.items():
            points, results = run_scenario(name, args, work / name, kinds, ns.jobs, ns.only)
            report["scenarios"][name] = {"points": [str(p) for p in points], "results": [asdict(r) for r in results]}
    report["wall_s"] = time.perf_counter() - t0
    report["cpu_s"] = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                          for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    everything = [r for s in report["scenarios"].values() for r in s["results"]]
    report["points"], report["equal"] = len(everything), sum(r["equal"] for r in everything)
    print(f"{report['points']} kill points, {report['equal']} resumed runs equal the uninterrupted run, "
          f"{report['wall_s']:.0f} s wall, {report['cpu_s']:.0f} s CPU")
    if ns.json is not None:
        ns.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["equal"] == report["points"] else 1


if __name__ == "__main__":
    sys.exit(main())
