"""Is configuration X better than Y? Jobs grouped over seeds, with CIs and paired tests.

Jobs of a sweep whose overrides differ only in ``seed`` are one *configuration*. For each
configuration: the mean final val loss over its completed jobs and the half-width of its 95%
confidence interval (t distribution, n - 1 df). Against a baseline configuration (the first
one, or one the user names): the mean of the per-seed differences ``config - baseline``
(paired by seed value, so seed-to-seed variation common to both cancels), its 95% CI and the
two-sided p-value of a paired t-test. Failed or incomplete jobs are left out of the
statistics and counted. A value that needs more data than there is stays blank (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from apt.sweeps.stats import mean_ci, paired_t

__all__ = ["GROUPED_COLUMNS", "ConfigStats", "fmt_stat", "group_key", "grouped_markdown", "grouped_stats",
           "seed_of"]

#: Columns of ``summary_grouped.csv`` in order.
GROUPED_COLUMNS = ("config", "n", "val_loss_mean", "val_loss_ci95", "delta_vs_baseline", "delta_ci95",
                   "p_value")

SEED_KEY = "seed"


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def seed_of(overrides: Sequence[str]) -> str | None:
    """The ``seed=`` value of a job's overrides (None: the config's default seed)."""
    return next((o.split("=", 1)[1] for o in overrides if _key_of(o) == SEED_KEY and "=" in o), None)


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without ``seed``: jobs with equal keys are one configuration."""
    return tuple(o for o in overrides if _key_of(o) != SEED_KEY)


@dataclass
class ConfigStats:
    """One row of ``summary_grouped.csv`` (and what the plot needs to draw it)."""

    config: str  # the overrides that set it apart from the other configurations
    key: tuple[str, ...]
    jobs: list[int] = field(default_factory=list)  # job numbers, completed or not
    losses: list[tuple[str, float]] = field(default_factory=list)  # (seed, final val loss), completed
    failed: int = 0
    baseline: bool = False
    val_loss_mean: float | None = None
    val_loss_ci95: float | None = None
    pairs: int = 0
    delta_vs_baseline: float | None = None
    delta_ci95: float | None = None
    p_value: float | None = None

    @property
    def n(self) -> int:
        return len(self.losses)

    def by_seed(self) -> dict[str, float]:
        """Mean loss per seed value (a seed run twice counts once when pairing)."""
        seen: dict[str, list[float]] = {}
        for seed, loss in self.losses:
            seen.setdefault(seed, []).append(loss)
        return {s: math.fsum(v) / len(v) for s, v in seen.items()}

    def row(self) -> dict[str, object]:
        return {"config": self.config, "n": self.n, "val_loss_mean": self.val_loss_mean,
                "val_loss_ci95": self.val_loss_ci95, "delta_vs_baseline": self.delta_vs_baseline,
                "delta_ci95": self.delta_ci95, "p_value": self.p_value}


def _labels(keys: Sequence[tuple[str, ...]]) -> list[str]:
    """The overrides that vary between configurations; all of them when there is one."""
    if len(keys) <= 1:
        return [" ".join(k) or "(base)" for k in keys]
    common = set(keys[0]).intersection(*map(set, keys[1:]))
    return [" ".join(o for o in k if o not in common) or "(base)" for k in keys]


def _find(groups: Sequence[ConfigStats], baseline: str) -> ConfigStats:
    wanted = baseline.split()
    exact = [g for g in groups if g.config == baseline]
    found = exact or [g for g in groups if all(w in g.key for w in wanted)]
    if len(found) != 1:
        what = "matches no configuration" if not found else f"matches {len(found)} configurations"
        raise ValueError(f"baseline {baseline!r} {what}; configurations: {[g.config for g in groups]}")
    return found[0]


def grouped_stats(jobs: Sequence[tuple[int, Sequence[str], str, float | None]],
                  baseline: str | None = None) -> list[ConfigStats]:
    """Group ``(job, overrides, status, final_val_loss)`` tuples into configurations.

    Configurations keep the order of their first job. ``baseline`` names one by its label
    or by overrides it contains (``"provider/attention=naive"``); None: the first. Raises
    ValueError when it matches no configuration or several.
    """
    by_key: dict[tuple[str, ...], ConfigStats] = {}
    for job, overrides, status, loss in jobs:
        key = group_key(overrides)
        g = by_key.setdefault(key, ConfigStats(config="", key=key))
        g.jobs.append(job)
        ok = status == "completed" and isinstance(loss, int | float) and math.isfinite(loss)
        if ok:
            g.losses.append((seed_of(overrides) or "default", float(loss)))
        else:
            g.failed += 1
    groups = list(by_key.values())
    for g, label in zip(groups, _labels([g.key for g in groups]), strict=True):
        g.config = label
    if not groups:
        return groups
    base = _find(groups, baseline) if baseline else groups[0]
    base.baseline = True
    base_seeds = base.by_seed()
    for g in groups:
        g.val_loss_mean, g.val_loss_ci95 = mean_ci([loss for _, loss in g.losses])
        mine = g.by_seed()
        seeds = [s for s in mine if s in base_seeds]
        if g is base or not seeds:
            continue
        test = paired_t([mine[s] for s in seeds], [base_seeds[s] for s in seeds])
        g.pairs, g.delta_vs_baseline, g.delta_ci95, g.p_value = test.n, test.mean_diff, test.ci, test.p_value
    return groups


def fmt_stat(value: float | None, fmt: str) -> str:
    """``value`` in ``fmt``, or in 2 significant digits where ``fmt`` would round it to zero."""
    if value is None:
        return ""
    if value != 0 and abs(value) < 5e-5:
        return format(value, "+.1e" if fmt.startswith("+") else ".1e")
    return format(value, fmt)


def grouped_markdown(groups: Sequence[ConfigStats]) -> str:
    """The grouped table as Markdown, with a line that says how to read it."""
    if not groups:
        return "No jobs.\n"
    base = next(g for g in groups if g.baseline)
    lines = [
        "Jobs whose overrides differ only in `seed` form one configuration. `val_loss_mean`: mean "
        "final val loss of its completed jobs; `val_loss_ci95`: half-width of the 95% confidence "
        "interval (t distribution, n - 1 df). Against the baseline "
        f"`{base.config}`: `delta_vs_baseline` is the mean per-seed difference (config - baseline, "
        "paired by seed value), `delta_ci95` its 95% CI half-width and `p_value` the two-sided "
        "paired t-test. Blank: too few jobs (n or pairs < 2). Failed jobs are left out of the "
        "statistics (\"+k failed\" next to n).",
        "",
        "| " + " | ".join(GROUPED_COLUMNS) + " |",
        "|" + "|".join("---" for _ in GROUPED_COLUMNS) + "|",
    ]
    for g in groups:
        n = str(g.n) + (f" (+{g.failed} failed)" if g.failed else "")
        delta = fmt_stat(g.delta_vs_baseline, "+.4f")
        if delta and g.pairs != g.n:
            delta += f" ({g.pairs} pair{'s' * (g.pairs != 1)})"
        cells = [g.config.replace("|", "\\|") + (" **(baseline)**" if g.baseline else ""), n,
                 fmt_stat(g.val_loss_mean, ".4f"), fmt_stat(g.val_loss_ci95, ".4f"), delta,
                 fmt_stat(g.delta_ci95, ".4f"), fmt_stat(g.p_value, ".3g")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
