"""Plots are optional: without matplotlib each one is skipped with a log line saying so."""

from __future__ import annotations

import logging
import sys

import pytest

from apt.training.metrics import plot_losses


def test_plots_are_skipped_with_a_log_line_without_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    rows = [{"step": 1, "train_loss": 2.0, "val_loss": 2.5}, {"step": 2, "train_loss": 1.5}]
    with caplog.at_level(logging.WARNING, logger="apt.plotting"):
        assert plot_losses(rows, tmp_path / "loss.png") is None
    assert not (tmp_path / "loss.png").exists()
    assert "matplotlib is not installed (pip install 'apt[plot]'): loss.png not drawn" in caplog.text


def test_loss_plot_is_drawn_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed (pip install 'apt[plot]')")
    rows = [{"step": 1, "train_loss": 2.0, "val_loss": 2.5}, {"step": 2, "train_loss": 1.5}]
    assert plot_losses(rows, tmp_path / "loss.png") == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_loss_plot_draws_the_final_whole_split_evaluation_apart_from_the_periodic_line(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed (pip install 'apt[plot]')")
    import matplotlib.pyplot as plt

    from apt.training.metrics import FINAL_MARKER

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [{"step": 2, "train_loss": 2.0, "val_loss": 2.5, "val_tokens": 512},
            {"step": 4, "train_loss": 1.8, "val_loss": 2.4, "val_tokens": 512},
            {"step": 6, "train_loss": 1.5, "val_loss": 2.1, "val_tokens": 1999}]  # the whole split
    plot_losses(rows, tmp_path / "loss.png")
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert list(lines["val (periodic evaluations)"].get_xdata()) == [2, 4]
    final = lines["val, final evaluation (by default the whole split)"]
    assert (list(final.get_xdata()), list(final.get_ydata()), final.get_marker()) == ([6], [2.1], FINAL_MARKER)
