"""HookManager: order, aliases, de-duplication, conditions, errors, strict mode, stats."""

import logging

import pytest

from apt.plugins import (
    EVENT_ALIASES,
    EVENTS,
    HookManager,
    Plugin,
    after_epoch,
    canonical_event,
    every_n_epochs,
)


@pytest.fixture
def hm(monkeypatch):
    monkeypatch.delenv("APT_STRICT_HOOKS", raising=False)
    return HookManager()


def recorder(log, label, result=None):
    def hook(**kwargs):
        log.append(label)
        return result if result is not None else label
    hook.__qualname__ = label
    return hook


def test_sixteen_standard_events_and_start_aliases():
    assert len(EVENTS) == 16 and len(set(EVENTS)) == 16
    assert EVENT_ALIASES == {
        "on_train_start": "on_train_begin", "on_epoch_start": "on_epoch_begin",
        "on_step_start": "on_step_begin", "on_batch_start": "on_batch_begin",
        "on_backward_start": "on_backward_begin", "on_validation_start": "on_validation_begin",
    }
    assert canonical_event("on_epoch_start") == "on_epoch_begin"
    assert canonical_event("on_epoch_end") == "on_epoch_end"


def test_priority_descending_ties_in_registration_order(hm):
    log = []
    for label, prio in [("a0", 0), ("b100", 100), ("c50", 50), ("d0", 0), ("e-5", -5), ("f50", 50)]:
        hm.register("on_step_end", recorder(log, label), priority=prio)
    results = hm.trigger("on_step_end", step=1)
    assert log == ["b100", "c50", "f50", "a0", "d0", "e-5"]
    assert results == log
    assert [h.name for h in hm.list_hooks("on_step_end")] == log


def test_aliases_run_each_hook_once_from_either_name(hm):
    log = []
    hm.register("on_epoch_start", recorder(log, "start"))
    hm.register("on_epoch_begin", recorder(log, "begin"))
    hm.trigger("on_epoch_start", epoch=1)
    assert log == ["start", "begin"]
    log.clear()
    hm.trigger("on_epoch_begin", epoch=1)
    assert log == ["start", "begin"]


def test_same_callable_twice_runs_once_and_reregistering_updates_priority(hm):
    log = []
    a, b = recorder(log, "a"), recorder(log, "b")
    hm.register("on_epoch_start", a, priority=1)
    hm.register("on_epoch_begin", a, priority=1)
    hm.register("on_epoch_begin", b, priority=5)
    hm.trigger("on_epoch_begin")
    assert log == ["b", "a"]
    hm.register("on_epoch_begin", a, priority=10)
    log.clear()
    hm.trigger("on_epoch_begin")
    assert log == ["a", "b"]
    assert len(hm.list_hooks("on_epoch_begin")) == 2


def test_bound_methods_deduplicate(hm):
    class Counter:
        n = 0

        def hit(self, **kw):
            self.n += 1

    c = Counter()
    hm.register("on_step_end", c.hit)
    hm.register("on_step_end", c.hit)
    hm.trigger("on_step_end")
    assert c.n == 1


def test_conditions_receive_event_kwargs(hm):
    seen, calls = [], []
    def cond(**kwargs):
        seen.append(kwargs)
        return kwargs["epoch"] >= 2
    hm.register("on_epoch_end", lambda **kw: calls.append(kw["epoch"]), condition=cond)
    for e in (1, 2, 3):
        hm.trigger("on_epoch_end", epoch=e, metrics={"loss": 1.0})
    assert calls == [2, 3]
    assert seen[0] == {"epoch": 1, "metrics": {"loss": 1.0}}


def test_conditional_hooks_skipped_return_no_result(hm):
    hm.register("on_epoch_end", lambda **kw: "saved", condition=every_n_epochs(5))
    hm.register("on_epoch_end", lambda **kw: "late", condition=after_epoch(10))
    assert [hm.trigger("on_epoch_end", epoch=e) for e in (4, 5, 10)] == [[], ["saved"], ["saved", "late"]]
    info = hm.list_hooks("on_epoch_end")
    assert info[0].condition == "every_n_epochs(5)"
    assert [i.calls for i in info] == [2, 1]


def test_raising_hook_is_logged_with_names_and_others_still_run(hm, caplog):
    log = []

    class Boom(Plugin):
        def get_name(self):
            return "boom"

        def on_step_end(self, **kw):
            raise RuntimeError("kaput")

    p = Boom()
    hm.register("on_step_end", recorder(log, "before"), priority=1)
    hm.register("on_step_end", p.on_step_end, name="explode")
    hm.register("on_step_end", recorder(log, "after"), priority=-1)
    with caplog.at_level(logging.ERROR, logger="apt.plugins.hooks"):
        results = hm.trigger("on_step_end", step=3)
    assert log == ["before", "after"] and results == ["before", "after"]
    rec = [r for r in caplog.records if r.levelno == logging.ERROR][0]
    msg = rec.getMessage()
    assert "'explode'" in msg and "'boom'" in msg and "'on_step_end'" in msg
    assert rec.exc_info and "kaput" in str(rec.exc_info[1])
    assert "Traceback" in caplog.text and "kaput" in caplog.text


def test_repeated_failures_disable_the_hook_with_a_warning(caplog):
    hm = HookManager(strict=False, max_failures=2)
    fails = []
    def bad(**kw):
        fails.append(1)
        raise ValueError("nope")
    hm.register("on_step_end", bad, name="bad")
    hm.register("on_step_end", lambda **kw: "ok", name="good")
    with caplog.at_level(logging.WARNING, logger="apt.plugins.hooks"):
        for _ in range(5):
            assert hm.trigger("on_step_end") == ["ok"]
    assert len(fails) == 2
    assert any("disabled" in r.getMessage() and "'bad'" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    info = {h.name: h for h in hm.list_hooks("on_step_end")}
    assert info["bad"].disabled and info["bad"].failures == 2 and info["bad"].calls == 2
    assert info["good"].calls == 5 and not info["good"].disabled
    assert [h.name for h in hm.list_hooks("on_step_end")] == ["good", "bad"]


def test_strict_mode_reraises(monkeypatch):
    hm = HookManager(strict=True)
    hm.register("on_step_end", lambda **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        hm.trigger("on_step_end")
    loose = HookManager(strict=False)
    loose.register("on_step_end", lambda **kw: 1 / 0)
    monkeypatch.setenv("APT_STRICT_HOOKS", "1")
    assert loose.trigger("on_step_end") == []  # explicit strict=False wins over the env var
    env = HookManager()
    env.register("on_step_end", lambda **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        env.trigger("on_step_end")
    monkeypatch.setenv("APT_STRICT_HOOKS", "0")
    assert env.trigger("on_step_end") == []


def test_max_failures_validated():
    with pytest.raises(ValueError, match="max_failures"):
        HookManager(max_failures=0)
    hm = HookManager(strict=False, max_failures=None)
    hm.register("on_step_end", lambda **kw: 1 / 0, name="z")
    for _ in range(10):
        hm.trigger("on_step_end")
    assert hm.list_hooks()[0].failures == 10 and not hm.list_hooks()[0].disabled


def test_custom_events_and_near_miss_warning(hm, caplog):
    with caplog.at_level(logging.WARNING, logger="apt.plugins.hooks"):
        hm.register("on_moe_upcycled", lambda n=0, **kw: n * 2)
        assert not caplog.records
        hm.register("on_epoch_ned", lambda **kw: None)
    assert hm.trigger("on_moe_upcycled", n=3) == [6]
    assert "'on_epoch_ned'" in caplog.text and "'on_epoch_end'" in caplog.text


def test_stats_count_calls_failures_and_time(hm):
    import time

    hm.register("on_batch_end", lambda **kw: time.sleep(0.002), name="slow")
    for _ in range(3):
        hm.trigger("on_batch_end")
    (info,) = hm.list_hooks("on_batch_end")
    assert info.calls == 3 and info.failures == 0
    assert info.total_time >= 0.006 and info.mean_time >= 0.002
    hm.reset_stats()
    assert hm.list_hooks("on_batch_end")[0].calls == 0


def test_unregister_by_callable_and_by_name(hm):
    log = []
    a = recorder(log, "a")
    hm.register("on_epoch_start", a)
    hm.register("on_epoch_end", recorder(log, "b"), name="bee")
    assert hm.unregister("on_epoch_begin", a)
    assert hm.unregister("on_epoch_end", "bee")
    assert not hm.unregister("on_epoch_end", "bee")
    hm.trigger("on_epoch_begin")
    hm.trigger("on_epoch_end")
    assert log == [] and hm.events() == []


def test_ownership_disabled_plugin_is_silent_and_unregister_owner(hm):
    log = []

    class P(Plugin):
        def on_step_end(self, **kw):
            log.append("method")

    p = P()
    with hm.owned_by(p):
        hm.register("on_step_end", recorder(log, "plain"))
    hm.register("on_step_end", p.on_step_end)
    hm.register("on_step_end", recorder(log, "free"))
    assert [(h.name.rsplit(".", 1)[-1], h.plugin) for h in hm.list_hooks()] == [
        ("plain", "p"), ("on_step_end", "p"), ("free", None)]
    p.disable()
    hm.trigger("on_step_end")
    assert log == ["free"]
    p.enable()
    hm.trigger("on_step_end")
    assert log == ["free", "plain", "method", "free"]
    assert hm.unregister_owner(p) == 2
    assert [h.name for h in hm.list_hooks()] == ["free"]


def test_no_hooks_returns_empty_list_and_bad_arguments_raise(hm):
    assert hm.trigger("on_train_end") == []
    with pytest.raises(TypeError, match="callable"):
        hm.register("on_train_end", 3)
    with pytest.raises(ValueError, match="non-empty"):
        hm.register("", print)
    with pytest.raises(TypeError, match="condition"):
        hm.register("on_train_end", print, condition=5)


def test_hooks_registered_during_trigger_run_from_the_next_trigger(hm):
    log = []
    def adder(**kw):
        log.append("adder")
        hm.register("on_step_end", recorder(log, "late"))
    hm.register("on_step_end", adder)
    hm.trigger("on_step_end")
    assert log == ["adder"]
    hm.trigger("on_step_end")
    assert log == ["adder", "adder", "late"]


def test_disabled_hooks_name_the_plugin_and_its_first_error():
    """The cause is the plugin's first error (here in another hook), not the last one seen."""
    class Broken(Plugin):
        def get_name(self):
            return "broken"

        def on_epoch_begin(self, **kw):
            raise IndexError("index 5 is out of range")

        def on_step_begin(self, **kw):
            raise AttributeError("no experts yet")

    hm = HookManager(strict=False, max_failures=3)
    plugin = Broken()
    plugin.setup(None, hm)
    hm.trigger("on_epoch_begin")
    assert hm.disabled_hooks() == []
    for _ in range(3):
        hm.trigger("on_step_begin")
    (hook,) = hm.disabled_hooks()
    assert (hook.plugin, hook.name, hook.event, hook.failures) == ("broken", "broken.on_step_begin", "on_step_begin", 3)
    assert hook.first_error == "IndexError: index 5 is out of range"
    assert str(hook) == ("plugin 'broken' failed: hook 'broken.on_step_begin' disabled on 'on_step_begin' after 3 "
                         "failures; first error: IndexError: index 5 is out of range")
    plugin.teardown()  # the record outlives the hook: the run it failed in is still not the one asked for
    assert hm.disabled_hooks() == [hook]
