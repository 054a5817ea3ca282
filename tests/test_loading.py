"""apt.loading: a checkpoint is rebuilt without running code it names.

Only built-in plugins and plugins installed through entry points may restore model
structure, and only their structure-restoring part runs: no ``setup``, no files opened.
"""

from __future__ import annotations

import sys

import pytest
import torch

from apt.app import run
from apt.compose import compose
from apt.loading import load_model
from apt.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

TINY = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.threads=1", "trainer.max_steps=2"]


def _trained(tmp_path, name, *overrides):
    out = tmp_path / name
    out.mkdir()
    run(compose([*TINY, f"data.cache_dir={tmp_path / 'cache'}", *overrides]), out_dir=out)
    return out / "checkpoints" / "step-00000002.pt"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("loading"), "plain")


def _crafted(tmp_path, genuine, plugins):
    state = load_checkpoint(genuine)
    state["config"] = {**state["config"], "plugin": plugins}
    return save_checkpoint(state, tmp_path / "crafted.pt")


def test_a_plugin_target_named_in_a_checkpoint_is_not_imported(tmp_path, genuine, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                         "from apt.plugins import Plugin\nclass Evil(Plugin):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for plugins in ({"evil": {"_target_": "evilmod.Evil"}},
                    {"moe": {"_target_": "evilmod.Evil"}}):  # a built-in's name with another class
        path = _crafted(tmp_path, genuine, plugins)
        with pytest.raises(CheckpointError) as info:
            load_model(str(path))
        (line,) = str(info.value).splitlines()
        name = next(iter(plugins))
        assert str(path) in line and repr(name) in line and "entry point" in line
    assert not marker.exists() and "evilmod" not in sys.modules


def test_sampling_a_logging_run_opens_no_file(tmp_path, monkeypatch):
    ckpt = _trained(tmp_path, "logged", "plugin=[logging]")
    run_log = tmp_path / "logged" / "training.log"
    before = run_log.read_text()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "training.log").write_text("my notes\n")
    model, _, _ = load_model(str(ckpt))
    assert (tmp_path / "training.log").read_text() == "my notes\n" and run_log.read_text() == before
    assert not model.training


def test_moe_layout_is_restored_by_the_plugin_structure_part(tmp_path):
    ckpt = _trained(tmp_path, "moe", "plugin=[moe]")
    model, _, state = load_model(str(ckpt))
    assert type(model.blocks[0].ffn).__name__ == "MoELayer"
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_a_provider_that_only_a_plugin_setup_registers_is_one_error_line(tmp_path, genuine):
    state = load_checkpoint(genuine)
    state["model_config"] = {**state["model_config"], "attention_name": "my_attention"}
    path = save_checkpoint(state, tmp_path / "custom.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(str(path))
    (line,) = str(info.value).splitlines()
    assert "'my_attention'" in line and "apt.providers" in line


def _mismatched(tmp_path, genuine):
    """The genuine checkpoint with a model config its weights do not fit (d_ff 64 -> 96)."""
    state = load_checkpoint(genuine)
    assert state["model_config"]["d_ff"] == 64
    state["model_config"] = {**state["model_config"], "d_ff": 96}
    return save_checkpoint(state, tmp_path / "mismatched.pt")


def test_weights_that_do_not_fit_the_config_are_one_error_line(tmp_path, genuine):
    path = _mismatched(tmp_path, genuine)
    with pytest.raises(CheckpointError) as info:
        load_model(str(path))
    (line,) = str(info.value).splitlines()
    assert str(path) in line and "do not match its model config" in line, line
    assert "blocks.0.ffn.c_fc.weight: [64, 32] in the file, [96, 32] for the config" in line, line


@pytest.mark.parametrize("module", ["apt.sample", "apt.evaluate", "apt.export.__main__"])
def test_sample_evaluate_and_export_refuse_a_mismatched_checkpoint_in_one_line(module, tmp_path, genuine, capsys):
    import importlib

    path = _mismatched(tmp_path, genuine)
    argv = [f"ckpt={path}", *([f"out={tmp_path / 'hf'}"] if module.startswith("apt.export") else [])]
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert line.startswith("error: ") and str(path) in line and "[64, 32] in the file, [96, 32]" in line, err
