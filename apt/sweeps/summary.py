"""Sweep summaries: one row per job of a Hydra multirun, one per configuration, and a plot.

Each job leaves a small JSON record (:data:`JOB_RECORD`) in its own output directory; the
summary is rebuilt from those records plus each job's ``metrics.csv``. Rebuilding from files
(rather than keeping rows in memory) is what makes the summary launcher-agnostic: jobs of the
joblib or submitit launchers run in other processes or on other machines, and a sweep that
was interrupted can be summarised afterwards with ``python -m apt summary <sweep_dir>``.

A sweep directory holds one sweep at a time: the launching process holds its lock
(:mod:`apt.training.runlock`) and writes :data:`SWEEP_FILE`, whose key every job stamps into
its record; the summary lists the records of that sweep only, so the leftovers of an earlier
sweep into the same directory (more jobs than this one) never mix in. A continued Optuna
study (same storage and study name) keeps its key, so its summary lists every trial.

Jobs that differ only in ``seed`` are grouped into configurations with confidence intervals
and paired tests against a baseline (:mod:`apt.sweeps.grouped`, ``summary_grouped.csv``).
Nothing here imports torch; matplotlib is imported only when the plot is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apt.core.files import atomic_write_text
from apt.sweeps.grouped import GROUPED_COLUMNS, ConfigStats, grouped_markdown, grouped_stats
from apt.sweeps.plot import plot_sweep
from apt.training.metrics import split_evals

__all__ = [
    "GROUPED_SUMMARY",
    "JOB_RECORD",
    "METRICS_FILE",
    "RUN_SUMMARY",
    "SUMMARY_COLUMNS",
    "SWEEP_FILE",
    "JobRecord",
    "collect_records",
    "read_metrics",
    "split_records",
    "start_sweep",
    "sweep_key",
    "sweep_groups",
    "varying_overrides",
    "write_summary",
]

#: File each job writes into its output directory (see :class:`apt.sweeps.SweepSummaryCallback`).
JOB_RECORD = "apt_job.json"
#: The trainer's per-log-step metrics file inside a job's output directory.
METRICS_FILE = "metrics.csv"
#: The app's end-of-run summary inside a job's output directory (absent if training failed).
RUN_SUMMARY = "summary.json"
#: The sweep now in (or last in) a sweep directory: ``{"sweep": key, "started", "pid"}``.
SWEEP_FILE = ".apt_sweep.json"
#: Per-configuration statistics written next to ``summary.csv``.
GROUPED_SUMMARY = "summary_grouped.csv"
#: Columns of ``summary.csv`` in order (``summary.md`` shows the same, minus ``dir``).
SUMMARY_COLUMNS = (
    "job",
    "overrides",
    "status",
    "final_val_loss",
    "final_val_loss_se",
    "best_val_loss",
    "steps",
    "tokens_per_s",
    "wall_time_s",
    "error",
    "dir",
)

# metrics.csv column names accepted for each quantity, first match wins.
_STEP_COLUMNS = ("step",)
_VAL_COLUMNS = ("val_loss", "val/loss")
_VAL_TOKENS_COLUMNS = ("val_tokens",)
_TRAIN_COLUMNS = ("train_loss", "train/loss", "loss")
_TOKS_COLUMNS = ("tokens_per_s", "tokens_per_sec", "tok_per_s", "throughput")


@dataclass
class JobRecord:
    """What one job of a sweep did: the row of the summary and the curve of the plot.

    ``status`` is ``completed``, ``failed``, or ``running`` while the job is alive; a record
    still ``running`` when the sweep has ended belongs to a job whose process died without
    reaching Hydra's ``on_job_end`` (killed, out of memory) and is reported ``incomplete``.
    An Optuna trial stopped by SIGINT/SIGTERM, or found abandoned when its study continues,
    is ``interrupted`` (:mod:`apt.sweeps.optuna_study`).
    """

    job: int
    overrides: list[str]
    sweep: str = ""  # the key of the sweep that ran it (:data:`SWEEP_FILE`)
    status: str = "running"
    return_value: float | None = None
    error: str = ""
    traceback: str = ""
    start_time: float | None = None
    wall_time_s: float | None = None
    dir: str = ""
    final_val_loss: float | None = None
    final_val_loss_se: float | None = None
    best_val_loss: float | None = None
    steps: int | None = None
    tokens_per_s: float | None = None
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # periodic evaluations
    final_evals: list[tuple[int, float]] = field(default_factory=list)  # final (whole-split) ones
    train_curve: list[tuple[int, float]] = field(default_factory=list)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / JOB_RECORD
        atomic_write_text(path, json.dumps(asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> JobRecord:
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("val_curve", "final_evals", "train_curve"):
            known[key] = [(int(s), float(v)) for s, v in known.get(key, [])]
        return cls(**known)

    def fill_from_outputs(self, job_dir: str | os.PathLike[str],
                          metrics_file: str = METRICS_FILE) -> None:
        """Fill steps, throughput and losses from what the job left in ``job_dir``.

        The curves come from ``metrics.csv``; the app's ``summary.json`` (written when
        training finishes) then wins for steps, throughput and best loss, because the
        trainer evaluates once more after its last log row and measures throughput over the
        whole run. The task's return value (train.py returns the final val loss) is the
        final loss when there is one. A job that failed early has neither file.

        ``best_val_loss`` compares like with like (docs/evaluation.md): it is the best of the
        periodic evaluations, which all score the same windows, never the final evaluation's
        whole-split loss (other windows; that one is ``final_val_loss``). summary.json's
        best (the trainer's, the final evaluation's share of the periodic windows included)
        wins; without it, the best of the periodic rows of metrics.csv.
        """
        d = Path(job_dir)
        run = _read_json(d / RUN_SUMMARY)
        periodic = run.get("best_val_tokens")
        m = read_metrics(d / metrics_file, periodic_tokens=periodic if isinstance(periodic, int) else None)
        self.val_curve = m["val_curve"]
        self.final_evals = m["final_evals"]
        self.train_curve = m["train_curve"]
        self.steps = m["steps"]
        self.tokens_per_s = m["tokens_per_s"]
        if isinstance(run.get("step"), int):
            self.steps = run["step"]
        if _finite(run.get("tokens_per_s")):
            self.tokens_per_s = float(run["tokens_per_s"])
        if _finite(run.get("val_loss_se")):
            self.final_val_loss_se = float(run["val_loss_se"])
        last = (self.final_evals or self.val_curve or [(0, None)])[-1][1]
        if _finite(self.return_value):
            self.final_val_loss = self.return_value
        elif _finite(run.get("val_loss")):
            self.final_val_loss = float(run["val_loss"])
        elif _finite(last):
            self.final_val_loss = last
        periodic_losses = [v for _, v in self.val_curve if _finite(v)]
        if _finite(run.get("best_val_loss")):
            self.best_val_loss = float(run["best_val_loss"])
        else:
            self.best_val_loss = min(periodic_losses) if periodic_losses else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _pick(header: Sequence[str], choices: Iterable[str]) -> str | None:
    return next((c for c in choices if c in header), None)


def _float(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_metrics(path: str | os.PathLike[str], periodic_tokens: int | None = None) -> dict[str, Any]:
    """Read a trainer ``metrics.csv`` into ``{"steps", "tokens_per_s", "val_curve", "final_evals",
    "train_curve"}``.

    Rows may leave columns empty (validation is logged less often than training loss), so
    each quantity is read from the rows that have it. The val rows are split by what they
    scored: ``val_curve`` holds the periodic evaluations (``periodic_tokens`` tokens, default:
    the fewest any row scored, since the periodic windows are a subset of the final ones) and
    ``final_evals`` the rows that scored more, the final evaluations (by default the whole
    split), which are not comparable with the curve. A file without ``val_tokens`` is all
    curve. ``tokens_per_s`` is the median over the logged rows, skipping the first when there
    are several: the first interval includes start-up and compilation and would understate
    the steady rate. A missing file gives ``None``/empty values, not an error, because a job
    can fail before logging anything.
    """
    out: dict[str, Any] = {"steps": None, "tokens_per_s": None, "val_curve": [], "final_evals": [],
                           "train_curve": []}
    p = Path(path)
    if not p.is_file():
        return out
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        step_col = _pick(header, _STEP_COLUMNS)
        val_col = _pick(header, _VAL_COLUMNS)
        val_tokens_col = _pick(header, _VAL_TOKENS_COLUMNS)
        toks_col = _pick(header, _TOKS_COLUMNS)
        train_col = _pick(header, _TRAIN_COLUMNS)
        steps: list[int] = []
        toks: list[float] = []
        evals: list[tuple[int, float, float | None]] = []
        train: list[tuple[int, float]] = []
        for i, row in enumerate(reader):
            step = _float(row.get(step_col)) if step_col else float(i + 1)
            if step is not None:
                steps.append(int(step))
            val = _float(row.get(val_col)) if val_col else None
            if val is not None and step is not None:
                evals.append((int(step), val, _float(row.get(val_tokens_col)) if val_tokens_col else None))
            tr = _float(row.get(train_col)) if train_col else None
            if tr is not None and step is not None:
                train.append((int(step), tr))
            tok = _float(row.get(toks_col)) if toks_col else None
            if tok is not None and math.isfinite(tok):
                toks.append(tok)
    out["val_curve"], out["final_evals"] = split_evals(evals, periodic_tokens)
    out["steps"] = max(steps) if steps else None
    out["train_curve"] = train
    if toks:
        steady = sorted(toks[1:] if len(toks) > 1 else toks)
        out["tokens_per_s"] = steady[len(steady) // 2]
    return out


def start_sweep(sweep_dir: str | os.PathLike[str], key: str) -> None:
    """Record that the sweep ``key`` now owns ``sweep_dir`` (its launching process holds the lock)."""
    atomic_write_text(Path(sweep_dir) / SWEEP_FILE,
                      json.dumps({"sweep": key, "started": time.time(), "pid": os.getpid()}))


def sweep_key(sweep_dir: str | os.PathLike[str]) -> str | None:
    """The key of the sweep that owns ``sweep_dir``; None where no sweep recorded one."""
    key = _read_json(Path(sweep_dir) / SWEEP_FILE).get("sweep")
    return key if isinstance(key, str) else None


def split_records(sweep_dir: str | os.PathLike[str], *, final: bool = False,
                  metrics_file: str = METRICS_FILE) -> tuple[list[JobRecord], list[JobRecord]]:
    """The job records under ``sweep_dir``, ordered by job number: those of the sweep that owns
    it, and those an earlier sweep left there (none where no sweep recorded its key).

    With ``final=True`` (the sweep is over) each record is refreshed from its job's output
    files (so a summary rebuilt later sees what the jobs left), and a record still marked
    ``running`` is reported as ``incomplete``: its process ended without Hydra's
    ``on_job_end``.
    """
    key = sweep_key(sweep_dir)
    records = []
    for path in sorted(Path(sweep_dir).rglob(JOB_RECORD)):
        try:
            rec = JobRecord.load(path)
        except (OSError, ValueError, TypeError) as exc:
            rec = JobRecord(job=-1, overrides=[], sweep=key or "", status="unreadable", error=f"{path}: {exc}")
        if not rec.dir:
            rec.dir = str(path.parent)
        if final and rec.status != "unreadable":
            rec.fill_from_outputs(path.parent, metrics_file)
        if final and rec.status == "running":
            rec.status = "incomplete"
            rec.error = rec.error or "the job's process ended before Hydra's on_job_end"
        records.append(rec)
    records.sort(key=lambda r: (r.job, r.dir))
    if key is None:
        return records, []
    return [r for r in records if r.sweep == key], [r for r in records if r.sweep != key]


def collect_records(sweep_dir: str | os.PathLike[str], *, final: bool = False,
                    metrics_file: str = METRICS_FILE) -> list[JobRecord]:
    """The job records of the sweep that owns ``sweep_dir`` (see :func:`split_records`)."""
    return split_records(sweep_dir, final=final, metrics_file=metrics_file)[0]


def varying_overrides(records: Sequence[JobRecord]) -> list[list[str]]:
    """Each job's overrides minus those shared by every job: the part that labels a curve."""
    if not records:
        return []
    common = set(records[0].overrides).intersection(*(set(r.overrides) for r in records[1:]))
    if len(records) == 1:
        common = set()
    return [[o for o in r.overrides if o not in common] for r in records]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _rel(rec: JobRecord, sweep_dir: Path) -> str:
    try:
        return str(Path(rec.dir).resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        return rec.dir


def _row(rec: JobRecord, sweep_dir: Path, *, exact: bool) -> dict[str, str]:
    """One summary row; ``exact`` keeps full float precision (CSV), else rounds (Markdown)."""
    rel = _rel(rec, sweep_dir)
    num = (lambda v, _d=4: "" if v is None else str(v)) if exact else _fmt
    return {
        "job": str(rec.job),
        "overrides": " ".join(rec.overrides),
        "status": rec.status,
        "final_val_loss": num(rec.final_val_loss),
        "final_val_loss_se": num(rec.final_val_loss_se),
        "best_val_loss": num(rec.best_val_loss),
        "steps": num(rec.steps),
        "tokens_per_s": num(rec.tokens_per_s, 1),
        "wall_time_s": num(rec.wall_time_s, 1),
        "error": rec.error.splitlines()[0][:200] if rec.error else "",
        "dir": rel,
    }


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(records: Sequence[JobRecord], groups: Sequence[ConfigStats], sweep_dir: Path,
              plot: Path | None, earlier: Sequence[JobRecord] = ()) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    done = [r for r in records if r.status == "completed" and _finite(r.final_val_loss)]
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(records)} jobs" + "".join(f"{', ' if i else ': '}{n} {s}"
                                         for i, (s, n) in enumerate(sorted(counts.items()))) + ".",
    ]
    if earlier:
        lines.append(f"{len(earlier)} job records of an earlier sweep in this directory are left out "
                     f"({', '.join(_rel(r, sweep_dir) for r in earlier)}).")
    if done:
        best = min(done, key=lambda r: r.final_val_loss)  # type: ignore[arg-type,return-value]
        lines.append(
            f"Best final val loss {_fmt(best.final_val_loss)}: job {best.job} "
            f"(`{' '.join(best.overrides) or 'no overrides'}`)."
        )
    lines += ["", "## Configurations", "", grouped_markdown(groups), "## Jobs", "",
              "`final_val_loss` (± `final_val_loss_se`): the final evaluation, by default on the whole "
              "val split. `best_val_loss`: the best periodic evaluation; those all score the same subset "
              "of windows (the final evaluation's share of them included), so it compares with other "
              "`best_val_loss` values, not with `final_val_loss`.", ""]
    cols = [c for c in SUMMARY_COLUMNS if c != "dir"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in (_row(r, sweep_dir, exact=False) for r in records):
        lines.append("| " + " | ".join(_md_cell(row[c]) for c in cols) + " |")
    if plot is not None:
        lines += ["", f"![validation loss per configuration]({plot.name})"]
    return "\n".join(lines) + "\n"


def _csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def sweep_groups(records: Sequence[JobRecord], baseline: str | None = None) -> list[ConfigStats]:
    """The configurations of a sweep's jobs (see :func:`apt.sweeps.grouped.grouped_stats`)."""
    return grouped_stats([(r.job, r.overrides, r.status, r.final_val_loss) for r in records], baseline)


def write_summary(
    sweep_dir: str | os.PathLike[str], *, final: bool = True, plot: bool = True,
    metrics_file: str = METRICS_FILE, baseline: str | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary_grouped.csv``, ``summary.md`` and ``val_loss.png``
    from the jobs of the sweep that owns ``sweep_dir`` (summary.md counts the others).

    ``baseline`` names the configuration the others are compared with (default: the first;
    ValueError when it matches none or several). Returns the paths written, keyed ``csv``,
    ``grouped``, ``md`` and ``plot`` (absent with ``plot=False`` or when no job logged a loss).
    """
    root = Path(sweep_dir)
    records, earlier = split_records(root, final=final, metrics_file=metrics_file)
    groups = sweep_groups(records, baseline)
    out: dict[str, Path] = {}
    png = plot_sweep(records, groups, root / "val_loss.png") if plot else None
    if png is not None:
        out["plot"] = png
    out["csv"] = root / "summary.csv"
    atomic_write_text(out["csv"], _csv((_row(r, root, exact=True) for r in records), SUMMARY_COLUMNS))
    out["grouped"] = root / GROUPED_SUMMARY
    atomic_write_text(out["grouped"], _csv((g.row() for g in groups), GROUPED_COLUMNS))
    out["md"] = root / "summary.md"
    atomic_write_text(out["md"], _markdown(records, groups, root, png, earlier))
    return out
