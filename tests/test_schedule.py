"""Schedule: values at the boundaries of every curve type, exact enablement, errors, resume."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from apt.schedule import ParamSchedule, Schedule, ScheduleError, current_schedule
from tests.helpers import assert_runs


@pytest.fixture(autouse=True)
def _no_active_schedule():
    yield
    active = current_schedule()
    if active is not None:
        active.deactivate()


# -- values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine", "exp"])
def test_epoch_schedule_hits_start_and_end_exactly(kind):
    s = Schedule({"t": {"start": 1.5, "end": 0.8, "by": "epoch", "type": kind}}, max_epochs=4)
    assert s.get("t", epoch=1) == pytest.approx(1.5)
    assert s.get("t", epoch=4) == pytest.approx(0.8)
    # clamped outside the run
    assert s.get("t", epoch=0) == pytest.approx(1.5)
    assert s.get("t", epoch=9) == pytest.approx(0.8)
    mid = [s.get("t", epoch=e) for e in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(mid, mid[1:], strict=False)), mid


def test_midpoints_of_each_type():
    spec = {"start": 1.0, "end": 4.0, "by": "step"}
    lin = Schedule({"v": {**spec, "type": "linear"}}, max_steps=3)
    cos = Schedule({"v": {**spec, "type": "cosine"}}, max_steps=3)
    exp = Schedule({"v": {**spec, "type": "exp"}}, max_steps=3)
    # step 2 of 3 is halfway (t = 0.5)
    assert lin.get("v", step=2) == pytest.approx(2.5)
    assert cos.get("v", step=2) == pytest.approx(2.5)  # cos at t=0.5 is also the mean
    assert exp.get("v", step=2) == pytest.approx(2.0)  # geometric mean of 1 and 4
    cos5 = Schedule({"v": {**spec, "type": "cosine"}}, max_steps=5)
    assert cos5.get("v", step=2) == pytest.approx(
        4.0 + (1.0 - 4.0) * 0.5 * (1 + math.cos(math.pi / 4))
    )


def test_route_temp_anneals_over_four_epochs():
    s = Schedule({"route_temp": {"start": 1.5, "end": 0.8, "by": "epoch"}}, max_epochs=4)
    assert [round(s.get("route_temp", epoch=e), 4) for e in (1, 2, 3, 4)] == [
        1.5,
        1.2667,
        1.0333,
        0.8,
    ]


def test_warmup_and_cooldown_hold_the_ends():
    s = Schedule(
        {"a": {"start": 0.0, "end": 1.0, "by": "step", "warmup": 2, "cooldown": 3}}, max_steps=10
    )
    # warmup holds start through step 3 (= 1 + warmup), cooldown holds end from step 7
    assert [s.get("a", step=k) for k in (1, 2, 3)] == [0.0, 0.0, 0.0]
    assert s.get("a", step=5) == pytest.approx(0.5)
    assert [s.get("a", step=k) for k in (7, 8, 10)] == [1.0, 1.0, 1.0]


def test_warmup_longer_than_the_run_switches_after_it():
    s = Schedule({"a": {"start": 1.0, "end": 0.0, "warmup": 3}}, max_epochs=3)
    assert [s.get("a", epoch=e) for e in (1, 2, 3, 4, 5)] == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_own_horizon_and_constants():
    s = Schedule({"a": {"start": 2.0, "end": 0.0, "by": "step", "horizon": 3}, "z": 0.01})
    assert s.get("a", step=3) == 0.0 and s.get("a", step=2) == pytest.approx(1.0)
    assert s.get("z") == 0.01 and s.get("z", epoch=100) == 0.01


def test_get_is_pure_and_uses_recorded_position():
    s = Schedule({"t": {"start": 1.0, "end": 0.0}}, max_epochs=3)
    s.epoch = 2
    assert s.get("t") == pytest.approx(0.5)
    assert s.get("t", epoch=3) == 0.0
    assert s.epoch == 2


# -- enablement -----------------------------------------------------------------------------
def test_enablement_switches_at_the_exact_epoch_and_step():
    s = Schedule({"enable_moe_at_epoch": 2, "enable_nan_guard_at_step": 5})
    assert s.scheduled_plugins == ["moe", "nan_guard"]
    assert [s.should_enable_plugin("moe", epoch=e) for e in (1, 2, 3)] == [False, True, True]
    assert [s.should_enable_plugin("nan_guard", step=k) for k in (4, 5)] == [False, True]
    assert s.should_enable_plugin("align", epoch=1)  # unscheduled plugins are on


class FakePlugins:
    def __init__(self, names):
        self.enabled = dict.fromkeys(names, True)
        self.calls = []

    def list_plugins(self):
        return list(self.enabled)

    def enable_plugin(self, name):
        self.enabled[name] = True
        self.calls.append(("enable", name))

    def disable_plugin(self, name):
        self.enabled[name] = False
        self.calls.append(("disable", name))


class FakeTrainer:
    def __init__(self, names=()):
        self.plugins = FakePlugins(names)
        self.logged = []

    def log_metric(self, name, value):
        self.logged.append((name, value))


def test_apply_switches_plugins_publishes_and_logs():
    s = Schedule(
        {
            "enable_moe_at_epoch": 2,
            "enable_align_at_epoch": 3,
            "route_temp": {"start": 1.5, "end": 0.8, "by": "epoch"},
            "alpha": {"start": 0.0, "end": 1.0, "by": "step"},
        },
        max_epochs=4,
        max_steps=11,
    )
    tr = FakeTrainer(["moe", "align", "csv"])
    temps = []
    s.bind("route_temp", temps.append)
    s.apply(tr, epoch=1, by="epoch")
    assert tr.plugins.enabled == {"moe": False, "align": False, "csv": True}
    assert tr.schedule_values == {"route_temp": 1.5}  # alpha's step unknown yet
    s.apply(tr, epoch=1, step=6, by="step")
    assert tr.schedule_values["alpha"] == pytest.approx(0.5)
    s.apply(tr, epoch=2, by="epoch")
    assert tr.plugins.enabled["moe"] and not tr.plugins.enabled["align"]
    s.apply(tr, epoch=3, by="epoch")
    assert tr.plugins.enabled["align"]
    s.apply(tr, epoch=4, by="epoch")
    assert temps == pytest.approx([1.5, 1.5 - 0.7 / 3, 1.5 - 1.4 / 3, 0.8])
    assert ("schedule/alpha", pytest.approx(0.5)) in tr.logged
    assert [v for n, v in tr.logged if n == "schedule/route_temp"] == pytest.approx(temps)
    # each switch happened once
    assert tr.plugins.calls == [
        ("disable", "moe"),
        ("disable", "align"),
        ("enable", "moe"),
        ("enable", "align"),
    ]


def test_state_dict_restores_position_and_values():
    cfg = {"enable_moe_at_epoch": 2, "t": {"start": 1.0, "end": 0.0, "by": "epoch"}}
    a = Schedule(cfg, max_epochs=5)
    for e in (1, 2, 3):
        a.apply(FakeTrainer(["moe"]), epoch=e)
    b = Schedule(cfg, max_epochs=5)
    b.load_state_dict(a.state_dict())
    assert (b.epoch, b.get("t")) == (3, a.get("t"))
    tr = FakeTrainer(["moe"])
    b.sync_plugins(tr.plugins)
    assert tr.plugins.calls == [("enable", "moe")]


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cfg", "kw", "needle"),
    [
        ({"t": {"start": 1, "end": 0, "by": "batch"}}, {"max_epochs": 2}, "by='batch'"),
        ({"t": {"end": 0}}, {"max_epochs": 2}, "missing start"),
        ({"t": {"start": 1}}, {"max_epochs": 2}, "missing end"),
        ({"t": {"start": 1, "end": 0, "type": "step"}}, {"max_epochs": 2}, "type='step'"),
        ({"t": {"start": 1, "end": 0, "by": "step"}}, {"max_epochs": 2}, "horizon is unknown"),
        ({"t": {"start": 0, "end": 1, "type": "exp"}}, {"max_epochs": 2}, "non-zero"),
        ({"t": {"start": 1, "end": 0, "warmup": -1}}, {"max_epochs": 3}, "warmup must be"),
        ({"t": {"start": 1, "end": 0, "stop": 3}}, {"max_epochs": 3}, "unknown keys ['stop']"),
        ({"enable_moe_at_epoch": 0}, {}, "integer >= 1, got 0"),
        ({"enable_moe_at_epoch": 2, "enable_moe_at_step": 9}, {}, "both by epoch and by step"),
        ({"t": "fast"}, {}, "expected a number or a mapping"),
    ],
)
def test_clear_errors(cfg, kw, needle):
    with pytest.raises(ScheduleError) as err:
        Schedule(cfg, **kw)
    assert needle in str(err.value)


def test_missing_position_and_unknown_name():
    s = Schedule({"t": {"start": 1, "end": 0}}, max_epochs=2)
    with pytest.raises(ScheduleError, match="pass epoch="):
        s.get("t")
    with pytest.raises(KeyError, match="scheduled values: \\['t'\\]"):
        s.get("nope", epoch=1)
    with pytest.raises(ScheduleError, match="by='epochs'"):
        s.apply(FakeTrainer(), epoch=1, by="epochs")


def test_unknown_scheduled_plugin_is_an_error_and_an_unselected_one_a_warning():
    s = Schedule({"enable_moe_at_epoch": 2, "enable_align_at_epoch": 3, "enable_nosuch_at_epoch": 2})
    errors, warns = s.check_plugins(["moe"], available=["align", "moe", "nan_guard"])
    assert errors == ["schedule enable_nosuch_at_epoch: 2 names plugin 'nosuch', which does not exist; "
                      "plugins: align, moe, nan_guard"]
    assert len(warns) == 1 and "'align', which is not selected" in warns[0]


def test_table_shows_timeline():
    s = Schedule({"enable_moe_at_epoch": 2, "route_temp": {"start": 1.5, "end": 0.8}}, max_epochs=3)
    lines = s.table().splitlines()
    assert lines[0].split() == ["epoch", "route_temp", "+moe"]
    assert lines[1].split() == ["1", "1.5", "off"]
    assert lines[3].split() == ["3", "0.8", "on"]


# -- interpolation --------------------------------------------------------------------------
def test_resolver_reads_start_before_training_and_live_values_after():
    cfg = OmegaConf.create(
        {
            "schedule": {"route_temp": {"start": 1.5, "end": 0.8, "by": "epoch"}},
            "plugin": {
                "moe": {"temperature": "${schedule:route_temp}", "alpha": "${schedule:alpha,0.35}"}
            },
        }
    )
    assert cfg.plugin.moe.temperature == 1.5  # nothing active: the entry's start
    assert cfg.plugin.moe.alpha == 0.35  # default when there is no entry
    s = Schedule(cfg.schedule, max_epochs=4)
    s.apply(FakeTrainer(), epoch=4)
    assert cfg.plugin.moe.temperature == pytest.approx(0.8)  # live, not cached
    s.deactivate()
    bad = OmegaConf.create({"x": "${schedule:nope}"})
    with pytest.raises(Exception, match="no schedule entry 'nope'"):
        _ = bad.x


def test_no_torch_import():
    assert_runs("import sys, apt.schedule; assert 'torch' not in sys.modules")


def test_param_schedule_validates_directly():
    with pytest.raises(ScheduleError, match="warmup must be"):
        ParamSchedule("x", 0.0, 1.0, warmup=-1, horizon=4)


def test_unreachable_entries_are_reported_once(caplog):
    s = Schedule({"enable_moe_at_epoch": 2, "route_temp": {"start": 1.5, "end": 0.8}}, max_epochs=4)
    tr = FakeTrainer(["moe"])
    tr.max_steps, tr.steps_per_epoch = 1000, 2292  # max_steps ends the run inside epoch 1
    problems = s.unreachable(tr)
    assert problems[0].startswith(
        "enable_moe_at_epoch: 2 is never reached: the run ends after 1000"
    )
    assert "stops at 1.5 instead of 0.8" in problems[1]
    with caplog.at_level("INFO", logger="apt.schedule"):
        s.apply(tr, epoch=1)
        s.apply(tr, epoch=1)
    assert caplog.text.count("is never reached") == 1
    assert "schedule: epoch 1: route_temp=1.5" in caplog.text
    tr.max_steps = 4 * 2292
    assert s.unreachable(tr) == []
