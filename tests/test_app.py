"""apt.app: every bad input gives one clear line before data or model are built."""

from __future__ import annotations

import sys

import pytest

from apt.app import ConfigProblems, new_plugin_manager, run
from apt.checks import check_run
from apt.plugins import Plugin
from tests.helpers import MyAttentionLayer, MyAttentionProvider, compose_cfg


def problems_of(*overrides, pm=None):
    with pytest.raises(ConfigProblems) as info:
        run(compose_cfg(*overrides), plugin_manager=pm)
    return info.value.problems


def test_default_config_is_valid():
    checked = check_run(compose_cfg())
    assert checked.config.providers == {"attention": "sdpa", "ffn": "mlp", "router": None}
    checked.plugins.teardown_all()


@pytest.mark.parametrize(("override", "expected"), [
    ("model.num_heads=3", "d_model=32 is not divisible by num_heads=3"),
    ("model.norm=batchnorm", "norm='batchnorm' is not one of ['layernorm', 'rmsnorm']"),
    ("trainer.max_steps=0", "trainer.max_steps must be a positive integer, got 0"),
    ("trainer.precision=fp8", "trainer.precision='fp8' is not one of ['auto', 'fp32', 'bf16']"),
    ("trainer.device=tpu", "trainer.device='tpu' is not one of"),
    ("optim.decay=step", "optim.decay='step' is not one of ['cosine', 'linear', 'constant', 'wsd']"),
    ("optim.optimizer.lr=-1", "optim.optimizer.lr must be a positive number, got -1"),
    ("data.task=sort", "data.task='sort' is not one of ['copy', 'cycle', 'markov']"),
    ("data.name=imagenet", "data.name='imagenet' is not one of ['stdlib', 'text', 'synthetic', 'tokens']"),
    ("data.test_fraction=0.95", "data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1"),
    ("ckpt_path=/no/such.pt", "ckpt_path='/no/such.pt' does not exist"),
    ("+plugin.nosuch={}", "unknown plugin 'nosuch'; available: align, checkpoint, csv,"),
    ("+plugin.x={_target_: nomodule.Plugin}", "plugin 'x': _target_='nomodule.Plugin' cannot be found"),
    ("provider.attention._target_=nomod.Attn", "provider.attention._target_='nomod.Attn' cannot be found"),
    ("+schedule.route_temp={start: 1, end: 2, by: week}", "schedule 'route_temp': by='week' is not one of"),
])
def test_bad_values_one_line_each(override, expected):
    problems = problems_of(override)
    assert len(problems) == 1 and expected in problems[0], problems


def test_several_problems_reported_together():
    problems = problems_of("trainer.max_steps=0", "optim.decay=step", "model.num_heads=3")
    assert len(problems) == 3


def test_text_data_needs_an_existing_path(tmp_path):
    assert problems_of("data=text") == ["data=text needs data.path=<a text file>"]
    assert problems_of("data=text", f"data.path={tmp_path}/none.txt") == [
        f"data.path='{tmp_path}/none.txt' does not exist"]


def test_text_tokenizer_specs_are_checked_before_data(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 100)
    assert problems_of("data=text", f"data.path={text}", "data.tokenizer=bpe") == [
        "data.tokenizer=bpe needs data.vocab_size=N (at least 257)"]
    assert problems_of("data=text", f"data.path={text}", "data.tokenizer=wordpiece")[0].startswith(
        "data.tokenizer='wordpiece' is not one of ['char', 'byte', 'bpe', '<path>/tokenizer.json'")


def test_token_directory_is_checked_before_data(tmp_path):
    assert problems_of("data=tokens") == [
        "data=tokens needs data.dir=<a directory written by python -m apt.data.prepare>"]
    assert problems_of("data=tokens", f"data.dir={tmp_path}/none") == [f"data.dir='{tmp_path}/none' is not a directory"]
    assert "has no meta.json" in problems_of("data=tokens", f"data.dir={tmp_path}")[0]


def test_unknown_provider_lists_valid_ones():
    problems = problems_of("provider/attention=registered", "provider.attention.name=nope")
    assert problems == ["unknown attention provider 'nope'; available: "
                        "['autopoietic', 'flash', 'naive', 'sdpa']"]


def test_provider_validate_config_failure_is_a_problem():
    problems = problems_of("provider/ffn=moe", "provider.ffn.top_k=9")
    assert len(problems) == 1 and "top_k=9" in problems[0]


def test_target_name_mismatch_is_reported():
    problems = problems_of("provider.attention.name=naive")
    assert "name 'naive' is registered to" in problems[0]


def test_composition_errors_are_one_line_naming_the_key_and_the_valid_ones():
    with pytest.raises(ConfigProblems, match=r"^trainer.max_steps must be an integer or null, got 'abc'$"):
        compose_cfg("trainer.max_steps=abc")
    with pytest.raises(ConfigProblems, match=r"unknown key trainer.max_stepz \(did you mean 'max_steps'\?\)"):
        compose_cfg("trainer.max_stepz=3")
    with pytest.raises(ConfigProblems, match=r"unknown provider/ffn 'nope'; valid: mlp, moe, registered, swiglu"):
        compose_cfg("provider/ffn=nope")


class Conflicting(Plugin):
    def get_name(self):
        return "conflicting"

    def get_conflicts(self):
        return ["logging"]


class NeedsMissing(Plugin):
    def get_name(self):
        return "needy"

    def get_dependencies(self):
        return ["plugin:early_stopping", "somepackage_that_is_not_installed>=1.0"]


def test_plugin_conflict_and_missing_dependency(tmp_path):
    pm = new_plugin_manager()
    pm.register_plugin("conflicting", Conflicting)
    problems = problems_of("plugin=[logging]", "+plugin.conflicting={}", pm=pm)
    assert len(problems) == 1 and "conflicting" in problems[0] and "logging" in problems[0]
    pm = new_plugin_manager()
    pm.register_plugin("needy", NeedsMissing)
    problems = problems_of("+plugin.needy={}", pm=pm)
    assert len(problems) == 1 and "somepackage_that_is_not_installed" in problems[0]
    pm = new_plugin_manager()
    pm.register_plugin("needy", type("N2", (NeedsMissing,), {"get_dependencies": lambda s: ["plugin:early_stopping"]}))
    problems = problems_of("+plugin.needy={}", pm=pm)
    assert len(problems) == 1 and "early_stopping" in problems[0]


class CountingAttention(MyAttentionProvider):
    """The guide's provider, counting the layers it creates."""

    created = 0

    def create_layer(self, d_model, num_heads, dropout=0.0, **kwargs):
        layer = super().create_layer(d_model, num_heads, dropout, **kwargs)
        assert isinstance(layer, MyAttentionLayer)
        CountingAttention.created += 1
        return layer


class ProvidesAttention(Plugin):
    def get_name(self):
        return "provides_attention"

    def setup(self, registry, hook_manager):
        super().setup(registry, hook_manager)
        registry.register("attention", "my_attention", CountingAttention)


def test_provider_registered_only_by_a_plugin_can_be_chosen_by_name(tmp_path):
    pm = new_plugin_manager()
    pm.register_plugin("provides_attention", ProvidesAttention)
    CountingAttention.created = 0
    run(compose_cfg("+plugin.provides_attention={}", "provider/attention=registered",
                    "provider.attention.name=my_attention", "trainer.max_steps=2"),
        out_dir=tmp_path, plugin_manager=pm)
    assert CountingAttention.created == 2  # one per layer of model=tiny


def test_plugin_target_registers_class(tmp_path):
    sys.modules[__name__].ProvidesAttention = ProvidesAttention
    pm = new_plugin_manager()
    run(compose_cfg(f"+plugin.provides_attention={{_target_: {__name__}.ProvidesAttention}}",
                    "provider/attention=registered", "provider.attention.name=my_attention",
                    "trainer.max_steps=1"), out_dir=tmp_path, plugin_manager=pm)
    assert pm.get_plugin("provides_attention") is not None
    assert pm.registry.has("attention", "my_attention")


def test_target_with_wrong_get_name_is_reported():
    problems = problems_of(f"+plugin.other_name={{_target_: {__name__}.ProvidesAttention}}")
    assert len(problems) == 1 and "get_name()" in problems[0]


def test_corrupt_ckpt_path_is_refused_before_the_run(tmp_path):
    bad = tmp_path / "step-00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    (problem,) = problems_of(f"ckpt_path={bad}")
    assert problem.startswith(f"ckpt_path='{bad}' is not an APT checkpoint") and "weights_only" not in problem


def test_the_summary_counts_parameters_after_structure_changes(tmp_path):
    import json

    from apt.loading import load_model

    out = tmp_path / "moe"
    run(compose_cfg("plugin=[moe]", "trainer.max_steps=2", "trainer.threads=1",
                    f"data.cache_dir={tmp_path / 'cache'}"), out_dir=out)
    model, _, _ = load_model(str(out / "checkpoints" / "step-00000002.pt"))
    upcycled = sum(p.numel() for p in model.parameters())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"] == upcycled  # not the dense model's count at build time


def test_python_warnings_during_a_run_reach_the_run_log(tmp_path, caplog, monkeypatch):
    """Hydra's train.log is a logging handler: a fallback announced with warnings.warn must
    go through logging too, not to stderr alone."""
    import logging

    import apt.providers.layers.flash as flash_layer

    monkeypatch.setattr(flash_layer, "_warned", set())
    with caplog.at_level(logging.WARNING):
        run(compose_cfg("provider/attention=flash", "trainer.max_steps=1", "trainer.threads=1",
                        f"data.cache_dir={tmp_path / 'cache'}"))
    assert any(r.name == "py.warnings" and "flash attention" in r.getMessage() for r in caplog.records)


def test_a_plugin_disabled_by_failures_fails_the_run_after_its_summary(tmp_path):
    """trainer.on_plugin_error=fail (the default): the run stops after the step in which the
    hook was disabled (no final evaluation, no checkpoint: not the model that was asked for),
    writes a summary naming the plugin and its first error, and raises."""
    import json

    from apt.app import RunFailed

    out = tmp_path / "run"
    with pytest.raises(RunFailed) as info:
        run(compose_cfg("+plugin.flaky={_target_: tests.helpers.Flaky}", "trainer.max_steps=8",
                        f"data.cache_dir={tmp_path / 'cache'}"), out_dir=out)
    reason = ("plugin 'flaky' failed: hook 'flaky.on_step_begin' disabled on 'on_step_begin' after 3 failures; "
              "first error: IndexError: index 2 is out of range")
    assert reason in str(info.value) and "at step 4" in str(info.value)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 4 and summary["failed"].startswith(reason)
    assert summary["plugin_errors"] == [reason]
    assert summary["val_loss"] is None and summary["checkpoint"] is None
    assert not list((out / "checkpoints").glob("*.pt"))


def test_a_plugin_that_fails_at_an_epochs_last_step_ends_the_run_without_that_epochs_end(tmp_path):
    """The failing step is the epoch's last (and the run's last): the loop ends before the
    epoch's end, so nothing is evaluated, recorded or fired with a plugin missing."""
    import json

    from apt.app import RunFailed

    out = tmp_path / "run"
    with pytest.raises(RunFailed, match="at step 4"):
        run(compose_cfg("+plugin.flaky={_target_: tests.helpers.Flaky}", "trainer.max_steps=4",
                        "trainer.steps_per_epoch=4", f"data.cache_dir={tmp_path / 'cache'}"), out_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 4 and summary["val_loss"] is None and summary["final_eval_time_s"] == 0
    assert summary["eval_time_s"] == 0


def test_on_plugin_error_warn_trains_on_and_the_summary_names_the_plugin(tmp_path, caplog):
    import json
    import logging

    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="apt"):
        val = run(compose_cfg("+plugin.flaky={_target_: tests.helpers.Flaky}", "trainer.max_steps=6",
                              "trainer.on_plugin_error=warn", f"data.cache_dir={tmp_path / 'cache'}"), out_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and summary["failed"] is None and summary["val_loss"] == pytest.approx(val)
    (error,) = summary["plugin_errors"]
    assert "plugin 'flaky' failed" in error and "first error: IndexError: index 2 is out of range" in error
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("summary:"))
    assert f"plugin errors: {error}" in line


def test_on_plugin_error_takes_fail_or_warn():
    (problem,) = problems_of("trainer.on_plugin_error=ignore")
    assert problem == "trainer.on_plugin_error='ignore' is not one of ['fail', 'warn']"


def test_plugin_options_the_model_refutes_are_config_problems():
    """Block indices of a 2-layer model, duplicates, and an empty list, before anything is built."""
    (problem,) = problems_of("plugin=[moe]", "plugin.moe.layers=[1,5]")
    assert problem == ("plugin 'moe': layers=[1, 5] names block(s) [5] that the model does not have; "
                       "model.num_layers=2, so valid block indices are 0..1")
    (problem,) = problems_of("plugin=[moe]", "plugin.moe.layers=[-1]")
    assert "names block(s) [-1] that the model does not have" in problem
    (problem,) = problems_of("plugin=[moe]", "plugin.moe.layers=[0,0]")
    assert "moe: layers=[0, 0] names block(s) [0] more than once; list each block once" in problem
    (problem,) = problems_of("plugin=[moe]", "plugin.moe.layers=[]")
    assert "moe: layers=[] selects no block to upcycle" in problem
    (problem,) = problems_of("plugin=[moe]", "plugin.moe.router=nosuch")  # was an error at the upcycle
    assert problem == "plugin 'moe': unknown router provider 'nosuch'; available: ['switch', 'topk']"


def test_plugin_moe_without_a_schedule_says_it_upcycles_before_the_first_step(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        run(compose_cfg("plugin=[moe]", "trainer.max_steps=1", f"data.cache_dir={tmp_path / 'cache'}"))
    (line,) = [r.getMessage() for r in caplog.records if "no dense phase" in r.getMessage()]
    assert "+schedule.enable_moe_at_epoch=N" in line and "+schedule.enable_moe_at_step=S" in line
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run(compose_cfg("plugin=[moe]", "trainer.max_steps=2", "+schedule.enable_moe_at_step=2",
                        f"data.cache_dir={tmp_path / 'cache'}"))
    assert not [r for r in caplog.records if "no dense phase" in r.getMessage()]
