"""``python -m apt``: listings, hooks against a recorded run, schedule, check, summary."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from apt.cli import main
from apt.cli.inspect import LOOP_ORDER, hook_table
from apt.cli.listing import plugin_infos, provider_infos
from apt.plugins import EVENTS, HookManager, canonical_event

REPO = Path(__file__).resolve().parents[1]

# A run small enough for a test: 4 steps in 2 epochs, validation every 2 steps.
TINY = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.max_steps=4",
        "trainer.steps_per_epoch=2", "trainer.eval_every=2", "trainer.eval_batches=1",
        "trainer.log_every=2", "data.num_tokens=4000", "optim.warmup_steps=1"]


def _run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apt", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


# -- torch-free and fast --------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["list", "plugins"], ["list", "providers"],
                                  ["check", "model=tiny"],
                                  ["check", "plugin=[logging,early_stopping,gradient_clipping,nan_guard,csv]",
                                   "provider/attention=autopoietic", "provider/ffn=swiglu", "data=synthetic",
                                   "optim=sgd", "trainer.device=cpu"],
                                  ["check", "plugin=[moe]"],
                                  ["check", "plugin=[align]"],
                                  ["check", "plugin=[moe,align]", "schedule=moe_align"],
                                  ["check", "provider/ffn=moe"],
                                  ["check", "provider/ffn=moe", "provider/router=switch", "provider.ffn.top_k=1"]])
def test_list_check_and_help_do_not_import_torch(argv):
    code = textwrap.dedent(f"""
        import sys
        from apt.cli import main
        try:
            rc = main({argv!r})
        except SystemExit as exc:
            rc = exc.code
        print("RC", rc, "TORCH", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert "RC 0 TORCH False" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize(("argv", "needle"), [
    (["plugin=[moe]", "plugin.moe.top_k=1"], "router 'topk' (top_k=1, normalize=False) gives combine weights"),
    (["plugin=[moe]", "plugin.moe.router=switch"], "the switch router is top-1, got top_k=2"),
    (["plugin=[moe]", "+plugin.moe.router_config.noise_std=-1"], "noise_std must be >= 0, got -1"),
    (["provider/ffn=moe", "provider/router=switch"], "switch router: the switch router is top-1"),
])
def test_moe_router_refusals_do_not_import_torch(argv, needle):
    code = textwrap.dedent(f"""
        import sys
        from apt.cli import main
        rc = main(["check", *{argv!r}])
        print("RC", rc, "TORCH", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert "RC 2 TORCH False" in out.stdout and needle in out.stderr, out.stdout + out.stderr


# -- list ---------------------------------------------------------------------------------
def test_list_plugins_matches_what_the_plugins_report():
    from apt.plugins import PluginManager

    infos = {p.name: p for p in plugin_infos()}
    pm = PluginManager(entry_points=False)
    assert set(pm.available_plugins()) <= set(infos)
    for name in pm.available_plugins():
        # Read statically; must equal what the loaded plugin says about itself.
        plugin = pm.get_plugin_class(name)({})
        assert infos[name].version == plugin.get_version(), name
        assert infos[name].description == plugin.get_description(), name
        assert infos[name].origin == "built-in"
    assert infos["early_stopping"].version == "1.0.0"


def test_listings_show_plain_text_not_sphinx_markup(capsys):
    assert main(["list", "plugins"]) == 0
    assert main(["list", "providers"]) == 0
    out = capsys.readouterr().out
    assert "EarlyStoppingOptions" in out and "every_n_steps" in out  # the names stay
    assert ":class:" not in out and "``" not in out and "`" not in out


def test_docstring_summary_keeps_the_words_of_roles_and_literals():
    from apt.plugins.base import docstring_summary

    assert docstring_summary("Stop early (options: :class:`EarlyStoppingOptions`).\n\nMore.") == \
        "Stop early (options: EarlyStoppingOptions)."
    assert docstring_summary("  Save every ``n`` steps via :py:meth:`~apt.Trainer.save`.") == "Save every n steps via save."
    assert docstring_summary(None) == "" and docstring_summary("") == ""


def test_list_plugins_shows_entry_point_plugins(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_apt_ext.py").write_text(textwrap.dedent('''
        from apt.plugins import Plugin

        class Shiny(Plugin):
            """Makes runs shiny."""

            def get_name(self):
                return "shiny"

            def get_version(self):
                return "2.1.0"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="shiny", value="my_apt_ext:Shiny", group="apt.plugins")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "apt.plugins" else real(**kw))
    assert main(["list", "plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["shiny"]["version"] == "2.1.0"
    assert rows["shiny"]["description"] == "Makes runs shiny."
    assert rows["shiny"]["origin"].startswith("entry point")
    assert rows["early_stopping"]["origin"] == "built-in"


def test_list_providers_marks_defaults_and_filters_by_kind(capsys):
    by_key = {(p.kind, p.name): p for p in provider_infos()}
    assert by_key[("attention", "sdpa")].default and not by_key[("attention", "naive")].default
    assert by_key[("attention", "naive")].target == "apt.providers.attention:NaiveAttentionProvider"
    assert main(["list", "providers", "--kind", "router"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["kind", "name", "default", "origin", "description"]
    assert {line.split()[1] for line in out[1:]} == {"switch", "topk"}
    assert main(["list", "providers", "--kind", "nope"]) == 2


# -- hooks: printed order == order of a recorded run ----------------------------------------
class RecordingHookManager(HookManager):
    """Records, per trigger, which hooks really ran (through the real trigger)."""

    def __init__(self) -> None:
        super().__init__(strict=True)
        self.calls: list[tuple[str, list[str]]] = []

    def trigger(self, event, **kwargs):
        ran: list[str] = []
        for h in self._ordered.get(canonical_event(event), ()):
            fn = getattr(h.fn, "__wrapped_hook__", h.fn)

            def wrapped(*a, __fn=fn, __name=h.name, **kw):
                ran.append(__name)
                return __fn(*a, **kw)

            wrapped.__wrapped_hook__ = fn
            h.fn = wrapped
        self.calls.append((canonical_event(event), ran))
        return super().trigger(event, **kwargs)


def _recorded_run(overrides, tmp_path, monkeypatch):
    from apt.app import run
    from apt.compose import compose
    from apt.core.registry import Registry
    from apt.plugins import PluginManager

    monkeypatch.chdir(tmp_path)  # the logging plugin writes training.log to the cwd
    hm = RecordingHookManager()
    pm = PluginManager(registry=Registry.with_builtins(entry_points=True), hook_manager=hm)
    cfg = compose([*TINY, *overrides])
    run(cfg, out_dir=tmp_path / "run", plugin_manager=pm)
    return hm.calls


@pytest.mark.parametrize("plugins", ["[early_stopping,gradient_clipping]",
                                     "[throughput,lr_monitor,logging]"])
def test_hooks_prints_the_firing_order_of_a_real_run(plugins, tmp_path, monkeypatch):
    overrides = [f"plugin={plugins}"]
    table = hook_table([*TINY, *overrides])
    listed = {e["event"]: [h["name"] for h in e["hooks"]] for e in table}
    calls = _recorded_run(overrides, tmp_path, monkeypatch)

    # Each trigger ran a subsequence of the printed list, in the printed order.
    for event, ran in calls:
        if ran:
            assert ran == [n for n in listed.get(event, []) if n in ran], (event, ran)
    # Every printed hook ran (no checkpoint is loaded in this run).
    fired = {(e, n) for e, ran in calls for n in ran}
    expected = {(e, n) for e, names in listed.items() for n in names if e != "on_checkpoint_load"}
    assert fired == expected
    # Events are printed in the order the loop first fires them.
    first_seen = list(dict.fromkeys(e for e, _ in calls))
    assert first_seen == [e for e in LOOP_ORDER if e in first_seen]
    assert list(listed) == [e for e in LOOP_ORDER if e in listed]


def test_hooks_cli_output_and_errors():
    assert set(LOOP_ORDER) == set(EVENTS)
    proc = _run_cli("hooks", "plugin=[early_stopping,gradient_clipping]")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "on_backward_end",
        "  1. gradient_clipping.on_backward_end  [plugin gradient_clipping, priority 0]",
        "on_validation_end",
        "  1. early_stopping.on_validation_end  [plugin early_stopping, priority 0]",
    ]
    bad = _run_cli("hooks", "plugin=[early_stoping]")
    assert bad.returncode == 2
    assert "unknown plugin 'early_stoping'" in bad.stderr and "early_stopping" in bad.stderr


def test_hooks_writes_nothing_where_it_runs(tmp_path, monkeypatch, capsys):
    # setting plugins up to list their hooks must not leave their files (training.log) behind
    monkeypatch.chdir(tmp_path)
    assert main(["hooks", "plugin=[logging,csv]"]) == 0
    assert "logging.on_epoch_end" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_hooks_marks_plugins_the_schedule_enables_later(capsys):
    assert main(["hooks", "plugin=[moe,align,throughput]", "schedule=moe_align", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    hooks = [h for e in table for h in e["hooks"]]
    assert {h["enabled_from"] for h in hooks if h["plugin"] == "moe"} == {"epoch 2"}
    assert {h["enabled_from"] for h in hooks if h["plugin"] == "align"} == {"epoch 3"}
    assert {h["enabled_from"] for h in hooks if h["plugin"] == "throughput"} == {None}


# -- schedule -------------------------------------------------------------------------------
def test_schedule_table_and_png(tmp_path, capsys):
    png = tmp_path / "schedule.png"
    argv = ["schedule", "schedule=moe_align", "plugin=[moe,align]", "trainer.max_epochs=4",
            "--png", str(png)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "route_temp", "+moe", "+align"]
    assert lines[1].split() == ["1", "1.5", "off", "off"]
    assert lines[2].split() == ["2", "1.267", "on", "off"]
    assert lines[4].split() == ["4", "0.8", "on", "on"]
    assert png.stat().st_size > 0


def test_schedule_needs_a_known_horizon(capsys):
    assert main(["schedule", "schedule=moe_align", "trainer.max_epochs=null"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["schedule", "schedule=moe_align", "trainer.max_epochs=null", "--epochs", "3"]) == 0
    assert "note: ['moe', 'align'] scheduled but not selected" in capsys.readouterr().out


# -- check --------------------------------------------------------------------------------
def test_check_reports_problems_like_train_py():
    ok = _run_cli("check", "model=tiny")
    assert ok.returncode == 0 and ok.stdout.strip() == "config OK"
    bad = _run_cli("check", "model.num_heads=3", "trainer.max_steps=0")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: model.d_model=128 is not divisible by num_heads=3",
                                       "error: trainer.max_steps must be a positive integer, got 0"]
    unknown = _run_cli("check", "provider/attention=flsh")
    assert unknown.returncode == 2 and "unknown provider/attention 'flsh' (did you mean 'flash'?)" in unknown.stderr


def test_check_warns_about_a_schedule_entry_for_an_unselected_plugin(capsys):
    assert main(["check", *TINY, "+schedule.enable_moe_at_epoch=2"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: schedule enable_moe_at_epoch: 2 refers to plugin 'moe', which is not selected")


def test_config_dir_adds_to_apts_configs(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide.yaml").write_text("defaults:\n  - /schema/model@_here_\n  - _self_\nd_model: 64\n")
    assert main(["check", "--config-dir", str(tmp_path), "model=wide", "trainer.max_steps=5"]) == 0
    assert main(["check", "--config-dir", str(tmp_path), "model=tiny"]) == 0  # APT's own options stay
    assert main(["check", "--config-dir", str(tmp_path / "nope")]) == 2
    assert "--config-dir" in capsys.readouterr().err


# -- summary --------------------------------------------------------------------------------
def test_summary_command_rebuilds_a_sweep_summary(tmp_path, capsys):
    from apt.sweeps import JobRecord

    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.csv").write_text(f"step,val_loss\n10,{2.0 + i}\n20,{1.0 + i}\n")
        rec = JobRecord(job=i, overrides=[f"seed={i}"], status="completed", return_value=1.0 + i)
        rec.fill_from_outputs(d)
        rec.save(d)
    assert main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # the grouped table: two seeds of one configuration, 95% CI = t(0.975, 1) * sd / sqrt(2)
    assert "| (base) **(baseline)** | 2 | 1.5000 | 6.3531 |  |  |  |" in out
    assert "2 jobs: 2 completed." in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "val_loss.png").exists()
    assert (tmp_path / "summary_grouped.csv").exists()


# -- one command family ---------------------------------------------------------------------
COMMANDS = ["train", "check", "sample", "evaluate", "export", "prepare", "summary", "hooks", "schedule", "list"]


def test_every_command_answers_help_without_torch():
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from apt.cli import main
        for command in {[c for c in COMMANDS if c != "export"] + ["export"]!r}:
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    rc = main([command, "--help"])
            except SystemExit as exc:
                rc = exc.code
            print(command, "RC", rc, "HELP", "python -m apt " + command in out.getvalue(), "TORCH", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    # apt.export's package imports its exporter (torch) on import: the last command, after all others
    expected = [f"{c} RC 0 HELP True TORCH {c == 'export'}" for c in COMMANDS if c != "export"]
    assert out.stdout.splitlines() == [*expected, "export RC 0 HELP True TORCH True"], out.stdout + out.stderr
    top = _run_cli("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in COMMANDS)


def test_version_is_the_installed_package_version():
    proc = _run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"apt {metadata.version('apt')}\n", proc.stderr


@pytest.mark.parametrize(("command", "module"), [("sample", "apt.sample"), ("evaluate", "apt.evaluate"),
                                                 ("export", "apt.export"), ("prepare", "apt.data.prepare")])
def test_module_forms_are_aliases_of_the_subcommands(command, module, tmp_path):
    sub = _run_cli(command, "--help")
    alias = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert sub.returncode == alias.returncode == 0, sub.stderr + alias.stderr
    assert sub.stdout == alias.stdout and sub.stdout.startswith("usage: python -m apt ")
    for args in (["colour=red"], ["a=["], []):  # unknown option, malformed, nothing
        bad = _run_cli(command, *args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stdout == "", bad.stderr
        _one_error_line(bad.stderr)


@pytest.mark.parametrize(("argv", "message"), [
    (["sampel"], "error: unknown command 'sampel' (did you mean 'sample'?); valid: train, sample, evaluate"),
    (["list", "plugin"], "error: argument what: invalid choice: 'plugin' (choose from 'providers', 'plugins')"),
    (["schedule", "--by", "week"], "error: argument --by: invalid choice: 'week'"),
    ([], "error: the following arguments are required: COMMAND"),
])
def test_usage_errors_read_as_every_other_error(argv, message):
    proc = _run_cli(*argv)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("usage: python -m apt") and lines[-1].startswith(message), proc.stderr
    assert [x for x in lines if "error" in x] == lines[-1:] and "python -m apt: error" not in proc.stderr


# -- every command ends in one line -----------------------------------------------------------
def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_a_full_disk_is_one_line_naming_the_file_and_the_free_space(tmp_path):
    # `ulimit -f 600` (600 KiB): the final checkpoint of a 0.1M-parameter model does not fit
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (600 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train.py", *TINY, "model.d_model=96", f"data.cache_dir={tmp_path / 'c'}",
                           f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert str(run_dir / "checkpoints" / "step-00000004.pt") in line and "File too large" in line, line
    assert "free on its filesystem" in line and "600 KiB (ulimit -f)" in line, line
    assert proc.stderr.rstrip().splitlines()[-1] == line
    assert list((run_dir / "checkpoints").iterdir()) == []  # no temporary file left behind


def _interrupted(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` (which sends this process a real SIGINT at a chosen point) in Python."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint of a 4-step run."""
    from apt.app import run
    from apt.compose import compose

    tmp = tmp_path_factory.mktemp("ckpt")
    run(compose([*TINY, f"data.cache_dir={tmp / 'c'}"]), out_dir=tmp / "run")
    return tmp / "run" / "checkpoints" / "step-00000004.pt"


@pytest.mark.parametrize("command", ["sample", "evaluate", "export"])
def test_an_interrupt_while_loading_a_checkpoint_is_one_line(command, checkpoint, tmp_path):
    argv = [command, f"ckpt={checkpoint}", *([f"out={tmp_path / 'hf'}"] if command == "export" else [])]
    proc = _interrupted(f"""
        import os, signal
        import apt.loading
        from apt.cli import main

        def load_model(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the weights load
            raise AssertionError("not interrupted")

        apt.loading.load_model = load_model
        for module in ("apt.sample", "apt.evaluate", "apt.export.exporter"):
            __import__(module)
            import sys
            sys.modules[module].load_model = load_model
        raise SystemExit(main({argv!r}))
    """, tmp_path)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == ["interrupted"], proc.stderr


def test_an_interrupt_before_training_is_one_line(tmp_path):
    proc = _interrupted(f"""
        import os, signal
        import apt.build
        from apt.cli import main

        def build(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the model is built
            raise AssertionError("not interrupted")

        apt.build.build = build
        raise SystemExit(main(["train", *{TINY!r}, "data.cache_dir={tmp_path / 'c'}",
                               "hydra.run.dir={tmp_path / 'run'}"]))
    """, tmp_path)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: the run stopped without saving") and str(tmp_path / "run") in last, last


def test_a_second_interrupt_stops_training_at_once_in_one_line(tmp_path):
    # the first Ctrl-C asks for a checkpoint at the end of the step; a second one stops at once,
    # and the checkpoints written so far remain for the resume
    run_dir = tmp_path / "run"
    long = [a for a in TINY if not a.startswith("trainer.max_steps=")]
    proc = _interrupted(f"""
        import os, signal
        from apt.training.checkpointing import Checkpointing
        from apt.cli import main

        save = Checkpointing.save

        def save_then_interrupt(self, trainer):
            path = save(self, trainer)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: pause after this step
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again: stop now
            raise AssertionError("not interrupted")

        Checkpointing.save = save_then_interrupt
        raise SystemExit(main(["train", *{long!r}, "trainer.max_steps=100", "trainer.checkpoint_every=2",
                               "data.cache_dir={tmp_path / 'c'}", "hydra.run.dir={run_dir}"]))
    """, tmp_path)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: the run stopped without saving; trainer.resume=true hydra.run.dir={run_dir} "
                    "continues from its last checkpoint"), last
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000002.pt"]
