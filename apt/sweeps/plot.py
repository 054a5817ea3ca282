"""The sweep picture: one mean curve per configuration with a band across seeds, and the finals.

Left: validation loss against step, the mean over a configuration's completed seeds with a
band from their lowest to their highest value at each step (the train loss mean dashed
behind, for runs that validate rarely). The curve is the periodic evaluations, which all
score the same windows; the final evaluation scores other windows (by default the whole
split), so it is not joined to the curve but drawn as a star at its step, labelled as such. Right: each configuration's final val loss, one
dot per seed, and the mean with its 95% confidence interval, so "is X better than Y" can be
read off the picture. Failed jobs are drawn dotted on the left and left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apt.sweeps.grouped import fmt_stat
from apt.training.metrics import FINAL_MARKER

if TYPE_CHECKING:
    from apt.sweeps.grouped import ConfigStats
    from apt.sweeps.summary import JobRecord

__all__ = ["FINAL_MARKER", "plot_sweep"]


def _mean_band(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[int], list[float], list[float],
                                                                       list[float]]:
    """Steps, mean, min and max over the curves that have a value at each step."""
    at: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            at.setdefault(int(step), []).append(float(value))
    steps = sorted(at)
    return (steps, [sum(at[s]) / len(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


def plot_sweep(records: Sequence[JobRecord], groups: Sequence[ConfigStats], path: Path) -> Path | None:
    """Draw the picture described above into ``path``; None when no job logged a loss."""
    if not any(r.val_curve or r.train_curve for r in records):
        return None
    from apt.plotting import pyplot

    plt = pyplot(path.name)
    if plt is None:
        return None
    by_job = {r.job: r for r in records}
    jobs = [[by_job[j] for j in g.jobs if j in by_job] for g in groups]
    curves = any(len(r.val_curve) + len(r.final_evals) > 1 for js in jobs for r in js)
    height = max(4.5, 1.5 + 0.6 * len(groups))
    if curves:
        fig, (ax, ax_final) = plt.subplots(1, 2, figsize=(13, height), width_ratios=(1.3, 1))
    else:  # every job evaluated once: the finals say it all
        fig, ax_final = plt.subplots(figsize=(8, height))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown: list[tuple[int, float]] = []
    finals = False
    for i, (g, js) in enumerate(zip(groups, jobs, strict=True)):
        color = colors[i % len(colors)]
        if curves:
            drawn = _draw_curves(ax, g, js, color)
            stars = _draw_final_evals(ax, js, color)
            finals |= bool(stars)
            shown += drawn + stars
        _draw_final(ax_final, g, len(groups) - 1 - i, color)
    if curves:
        if finals:  # one legend entry for the stars of every configuration
            ax.plot([], [], FINAL_MARKER, color="0.4", markersize=9, linestyle="none",
                    label="final evaluation (by default the whole split: other windows)")
        _zoom(ax, shown)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("val loss of the periodic evaluations: mean over seeds, band = min-max\n"
                     "(dashed: train; star: the final evaluation)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    ax_final.set_yticks(range(len(groups)), [f"{g.config}\nn={g.n}" + (f" (+{g.failed} failed)" if g.failed else "")
                                             + (" (baseline)" if g.baseline else "") for g in reversed(groups)],
                        fontsize=8)
    ax_final.set_ylim(-0.7, len(groups) - 0.4)
    ax_final.set_xlabel("final val loss")
    ax_final.set_title("final val loss: dots = seeds, diamond = mean ± 95% CI\n"
                       "Δ: paired difference to the baseline ± 95% CI, paired t-test p", fontsize=10)
    ax_final.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _zoom(ax: Any, points: Sequence[tuple[int, float]]) -> None:
    """Leave out the first fifth of the steps from the y range: early losses dwarf the differences."""
    last = max(step for step, _ in points)
    late = [v for step, v in points if step >= 0.2 * last] or [v for _, v in points]
    lo, hi = min(late), max(late)
    pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 0.1
    ax.set_ylim(lo - pad, hi + pad)


def _draw_curves(ax: Any, g: ConfigStats, jobs: Sequence[JobRecord], color: str) -> list[tuple[int, float]]:
    """Mean val curve with its band, train mean dashed; returns the points drawn (band edges, train)."""
    done = [r for r in jobs if r.status == "completed"]
    label: str | None = f"{g.config} (n={g.n})"
    steps, mean, lo, hi = _mean_band([r.val_curve for r in done if r.val_curve])
    if steps:
        ax.plot(steps, mean, "-", color=color, marker="o", markersize=3.5, linewidth=1.8, label=label)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
        label = None
    t_steps, t_mean, _, _ = _mean_band([r.train_curve for r in done if r.train_curve])
    if t_steps:
        ax.plot(t_steps, t_mean, "--", color=color, alpha=0.45, linewidth=1, label=label)
    for r in jobs:
        if r.status != "completed" and r.val_curve:
            ax.plot(*zip(*r.val_curve, strict=True), ":", color=color, alpha=0.7, linewidth=1)
    return [*zip(steps, lo, strict=True), *zip(steps, hi, strict=True), *zip(t_steps, t_mean, strict=True)]


def _draw_final_evals(ax: Any, jobs: Sequence[JobRecord], color: str) -> list[tuple[int, float]]:
    """Stars at the mean of the completed jobs' final evaluations; returns the points drawn
    (their error bars' ends), for the zoom."""
    steps, mean, lo, hi = _mean_band([r.final_evals for r in jobs if r.status == "completed" and r.final_evals])
    if not steps:
        return []
    ax.errorbar(steps, mean, yerr=[[m - low for m, low in zip(mean, lo, strict=True)],
                                   [high - m for m, high in zip(mean, hi, strict=True)]],
                fmt=FINAL_MARKER, color=color, markersize=11, capsize=3, linewidth=1, zorder=3)
    return [*zip(steps, lo, strict=True), *zip(steps, hi, strict=True)]


def _draw_final(ax: Any, g: ConfigStats, y: float, color: str) -> None:
    values = [loss for _, loss in g.losses]
    seeds_y = [y - 0.2 + 0.05 * ((k % 3) - 1) for k in range(len(values))]  # below the mean's bar
    ax.scatter(values, seeds_y, color=color, alpha=0.6, s=18, zorder=2)
    if g.val_loss_mean is None:
        return
    ax.errorbar([g.val_loss_mean], [y], xerr=[[g.val_loss_ci95 or 0.0]] * 2, fmt="D", color=color,
                markersize=6, capsize=5, elinewidth=2, zorder=3)
    if g.delta_vs_baseline is not None:
        text = f"Δ {fmt_stat(g.delta_vs_baseline, '+.4f')}"
        if g.delta_ci95 is not None:
            text += f" ± {fmt_stat(g.delta_ci95, '.4f')}, p = {fmt_stat(g.p_value, '.2g')}"
        ax.annotate(text, (g.val_loss_mean, y + 0.12), ha="center", va="bottom", fontsize=8, color=color)
