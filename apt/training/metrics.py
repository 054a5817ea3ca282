"""metrics.csv and the loss-curve plot.

Columns are not fixed in advance: plugins add their own through ``trainer.log_metric``
(``loss/balance`` appears from the step MoE routing starts). When a new column
shows up the file is rewritten with the wider header, so it stays one valid CSV.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apt.core.files import naming_no_space

__all__ = ["FINAL_MARKER", "MetricsLogger", "logging_redirect", "plot_losses", "progress_bar", "split_evals"]

#: The marker of a final (by default whole-split) evaluation in loss plots: it scores other
#: windows than the periodic evaluations, so it is a point apart, not part of their line.
FINAL_MARKER = "*"


class MetricsLogger:
    """Rows of metrics kept in memory and mirrored to ``path`` (when given).

    The file is this logger's alone: it is rewritten from the rows in memory when the
    logger starts with rows (a resume) and at the first row otherwise, so rows a killed run
    wrote after its last checkpoint never stay behind.
    """

    BASE = ("step", "epoch", "train_loss", "val_loss", "val_loss_se", "val_tokens", "lr", "tokens_per_s")

    def __init__(self, path: str | Path | None = None, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.columns: list[str] = list(self.BASE)
        for row in self.rows:
            self._extend(row)
        self._synced = False  # the file holds exactly self.rows
        if self.path is not None and self.rows:
            self._rewrite()

    def _extend(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def log(self, row: Mapping[str, Any]) -> None:
        row = dict(row)
        self.rows.append(row)
        widened = self._extend(row)
        if self.path is None:
            return
        if widened or not self._synced:
            self._rewrite()
        else:
            with naming_no_space(self.path), self.path.open("a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, self.columns).writerow(_fmt(row))

    def update_last(self, **values: Any) -> None:
        """Fill in values of the newest row (e.g. a val loss measured after it was written)."""
        self.rows[-1].update(values)
        self._extend(values)
        if self.path is not None:
            self._rewrite()

    def _rewrite(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with naming_no_space(self.path), self.path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, self.columns)
            writer.writeheader()
            writer.writerows(_fmt(r) for r in self.rows)
        self._synced = True


def _fmt(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def split_evals(evals: Sequence[tuple[int, float, float | None]], periodic_tokens: float | None = None
                ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(step, val_loss, val_tokens)`` rows split into the periodic evaluations and the final ones.

    Periodic evaluations score a fixed subset of the final evaluation's windows, so a row that
    scored more tokens than ``periodic_tokens`` (default: the fewest any row scored) is a
    final one; rows without a token count are periodic. Only rows of one kind compare.
    """
    counts = [n for _, _, n in evals if n is not None]
    subset = periodic_tokens if periodic_tokens is not None else min(counts, default=None)
    periodic: list[tuple[int, float]] = []
    final: list[tuple[int, float]] = []
    for step, loss, n in evals:
        (final if subset is not None and n is not None and n > subset else periodic).append((step, loss))
    return periodic, final


def plot_losses(rows: list[Mapping[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Train and val loss against step as a PNG; ``None`` when there is nothing to plot
    (or no matplotlib, which is logged). The val line joins the periodic evaluations; the
    final evaluation (other windows: :func:`split_evals`) is a star apart."""
    train = [(r["step"], r["train_loss"]) for r in rows if _finite(r.get("train_loss"))]
    val, final = split_evals([(r["step"], r["val_loss"], r["val_tokens"] if _finite(r.get("val_tokens")) else None)
                              for r in rows if _finite(r.get("val_loss"))])
    if not train and not val and not final:
        return None
    from apt.plotting import pyplot

    plt = pyplot(Path(path).name)
    if plt is None:
        return None

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="val (periodic evaluations)")
    if final:
        ax.plot(*zip(*final, strict=True), FINAL_MARKER, markersize=11, linestyle="none",
                label="val, final evaluation (by default the whole split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def progress_bar(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)


def logging_redirect(bar: Any) -> Any:
    if bar is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()
