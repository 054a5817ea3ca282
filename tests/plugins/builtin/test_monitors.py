"""lr_monitor and throughput: what they log and when."""

from __future__ import annotations

import time

import pytest
import torch

from apt.plugins.builtin.lr_monitor import LRMonitorPlugin
from apt.plugins.builtin.throughput import ThroughputPlugin, peak_memory_mb

from ._helpers import RecordingTrainer


def test_lr_monitor_logs_each_group_when_they_differ():
    w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    trainer = RecordingTrainer(optimizer=opt)
    plugin = LRMonitorPlugin({"every_n_steps": 2})
    plugin.on_step_end(step=1, trainer=trainer, optimizer=opt)
    assert trainer.logged == []
    plugin.on_step_end(step=2, trainer=trainer, optimizer=opt)
    assert trainer.metrics == {"lr": 0.1, "lr/group0": 0.1, "lr/group1": 0.01}
    single = torch.optim.SGD([w], lr=0.5)
    assert plugin.learning_rates(single) == {"lr": 0.5}
    with pytest.raises(ValueError, match="every_n_steps"):
        LRMonitorPlugin({"every_n_steps": 0}).validate_config()


def test_throughput_counts_tokens_over_a_window():
    trainer = RecordingTrainer()
    plugin = ThroughputPlugin({"every_n_steps": 2})
    x = torch.zeros(4, 8, dtype=torch.long)
    for step in (1, 2):
        plugin.on_step_begin(step=step)
        for _ in range(3):  # three micro-batches per step (gradient accumulation)
            plugin.on_batch_begin(batch=(x, x))
        time.sleep(0.01)
        plugin.on_step_end(step=step, trainer=trainer)
    m = trainer.metrics
    assert m["throughput/ms_per_step"] >= 10.0
    # 2 steps * 3 micro-batches * 32 tokens in about 2 * 10 ms
    expected = 192 / (2 * m["throughput/ms_per_step"] / 1000)
    assert m["throughput/tokens_per_s"] == pytest.approx(expected, rel=1e-6)
    assert m["throughput/peak_mem_mb"] == pytest.approx(peak_memory_mb(), rel=0.5)
    assert peak_memory_mb() > 10


def test_throughput_skips_validation_time():
    trainer = RecordingTrainer()
    plugin = ThroughputPlugin({"every_n_steps": 1})
    plugin.on_step_begin(step=1)
    plugin.on_validation_begin()
    time.sleep(0.05)
    plugin.on_step_begin(step=2)
    plugin.on_step_end(step=2, trainer=trainer)
    assert trainer.metrics["throughput/ms_per_step"] < 40
