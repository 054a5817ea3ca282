"""Mistakes a researcher plausibly makes, each answered before anything is computed.

For every input of :data:`CASES`: ``python -m apt check`` and train.py's preflight (the
check train.py runs before Hydra creates a run directory) give exit status 2 and the same
stderr, one ``error:`` line naming the bad value (and the valid choices) plus at most one
``hint:`` line, and no traceback. A representative few also run as real ``python train.py``
processes: same lines, no run directory, no training step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from apt.app import preflight
from apt.cli import main as apt_main
from apt.core.errors import ConfigProblems

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data=synthetic", "trainer=debug"]

BAD_PLUGINS = '''
from apt.core import AttentionProvider
from apt.plugins import Plugin


class Jealous(Plugin):
    def get_name(self):
        return "jealous"

    def get_conflicts(self):
        return ["early_stopping"]


class Needy(Plugin):
    def get_name(self):
        return "needy"

    def get_dependencies(self):
        return ["plugin:early_stopping"]


class StrictAttention(AttentionProvider):
    def create_layer(self, d_model, num_heads, dropout=0.0):  # no **kwargs
        raise AssertionError("never built: refused when the config is checked")
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Bad data files, a text file posing as a checkpoint, a broken config dir, bad plugins."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "one.txt").write_text("a", encoding="utf-8")
    (d / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 200)
    (d / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (d / "corpus.txt").write_text("to be or not to be\n" * 400, encoding="utf-8")
    (d / "notes.pt").write_text("not a checkpoint\n", encoding="utf-8")
    torch.save({"format": "apt-checkpoint"}, d / "step-00000001.pt")  # passes the header check
    (d / "a_file").write_text("x", encoding="utf-8")
    (d / "conf" / "model").mkdir(parents=True)
    (d / "conf" / "model" / "broken.yaml").write_text("d_model: [32\n", encoding="utf-8")
    (d / "badplugins.py").write_text(BAD_PLUGINS, encoding="utf-8")
    return d


# (id, overrides ({d}: the files fixture), a substring of the one error line)
CASES = [
    # composition: group options, keys, types, files
    ("unknown-model", ["model=tinyy"], "unknown model 'tinyy' (did you mean 'tiny'?); valid: modern, small, tiny"),
    ("unknown-key", ["trainer.max_stpes=5"], "unknown key trainer.max_stpes (did you mean 'max_steps'?); valid keys of trainer:"),
    ("int-not-str", ["trainer.max_steps=abc"], "trainer.max_steps must be an integer or null, got 'abc'"),
    ("int-not-float", ["data.batch_size=2.5"], "data.batch_size must be an integer, got 2.5"),
    ("broken-yaml", ["--config-dir", "{d}/conf", "model=broken"], "cannot parse {d}/conf/model/broken.yaml, line 2:"),
    ("provider-key", ["provider.router.noise_sdt=0.1"],
     "unknown key provider.router.noise_sdt (did you mean 'noise_std'?); valid keys of provider.router: "),
    ("unknown-plugin", ["plugin=[early_stoping]"], "unknown plugin 'early_stoping' (did you mean 'early_stopping'?)"),
    ("unknown-provider", ["provider/attention=flsh"], "unknown provider/attention 'flsh' (did you mean 'flash'?)"),
    ("unknown-group", ["modle=tiny"], "unknown key modle (did you mean 'model'?)"),
    ("unparsable", ["trainer.max_steps=["], "cannot parse override 'trainer.max_steps=['"),
    ("plugin-key", ["plugin=[early_stopping]", "plugin.early_stopping.patiance=3"],
     "unknown key plugin.early_stopping.patiance (did you mean 'patience'?)"),
    # values
    ("seed", ["seed=abc"], "seed must be an integer, got 'abc'"),
    ("schedule-start", ["+schedule.route_temp={start:abc,end:0.8,by:epoch}"],
     "schedule 'route_temp': start and end must be numbers, got start='abc', end=0.8"),
    ("schedule-by", ["+schedule.route_temp={start:1.5,end:0.8,by:epochs}"], "schedule 'route_temp': by='epochs'"),
    ("heads", ["model.num_heads=3"], "model.d_model=32 is not divisible by num_heads=3"),
    ("dropout", ["model.dropout=1.5"], "model.dropout must be in [0, 1), got 1.5"),
    ("val-fraction", ["data.val_fraction=1.5"], "data.val_fraction must be in (0, 1), got 1.5"),
    ("steps", ["trainer.max_steps=0"], "trainer.max_steps must be a positive integer, got 0"),
    ("added-key", ["+trainer.foo=1"], "unknown key trainer.foo; valid keys of trainer:"),
    ("seq-len", ["data.block_size=64", "model.max_seq_len=32"], "data.block_size=64 exceeds model.max_seq_len=32"),
    ("lr", ["optim.optimizer.lr=-1"], "optim.optimizer.lr must be a positive number, got -1"),
    ("cooldown-not-wsd", ["optim.cooldown_fraction=0.3"],
     "optim.cooldown_fraction=0.3 applies to optim.decay=wsd only (decay is 'cosine')"),
    ("cooldown-range", ["optim.decay=wsd", "optim.cooldown_fraction=1.5"],
     "optim.cooldown_fraction must be in (0, 1] (or null: 0.2), got 1.5"),
    ("optim-part-selector", ["optim=muon", "optim.parts.hidden.params=hiden_matrices"],
     "optim.parts.hidden.params='hiden_matrices' is not a parameter selector (did you mean 'hidden_matrices'?); "
     "valid: hidden_matrices, matrices, embeddings, vectors"),
    ("optim-part-key", ["optim=muon", "+optim.parts.hidden.weight_decy=0"],
     "unknown key optim.parts.hidden.weight_decy (did you mean 'weight_decay'?); valid keys: params, optimizer, "
     "weight_decay"),
    ("optim-part-lr", ["optim=muon", "optim.parts.hidden.optimizer.lr=0"],
     "optim.parts.hidden.optimizer.lr must be a positive number, got 0"),
    ("optim-part-option", ["optim=muon", "+optim.parts.hidden.optimizer.moment=0.9"],
     "optim.parts.hidden.optimizer.moment: Muon takes no option 'moment' (did you mean 'momentum'?); valid: lr, "
     "weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn"),
    ("optim-option", ["+optim.optimizer.beta=0.9"],
     "optim.optimizer.beta: AdamW takes no option 'beta' (did you mean 'betas'?); valid: lr, betas, eps,"),
    ("optim-part-name", ["optim=muon", "+optim.parts.default={params: vectors}"],
     "optim.parts.default: 'default' is the name of optim.optimizer's part; choose another name"),
    ("optim-parts-fsdp", ["optim=muon", "trainer.strategy=fsdp"],
     "optim.parts cannot run with trainer.strategy=fsdp: FSDP shards each matrix across ranks"),
    # data, before it is read into memory
    ("empty-file", ["data=text", "data.path={d}/empty.txt"], "data.path='{d}/empty.txt' is empty"),
    ("binary-file", ["data=text", "data.path={d}/binary.bin"], "is not UTF-8 text (byte 0x80 at offset 128)"),
    ("latin1-file", ["data=text", "data.path={d}/latin1.txt"], "is not UTF-8 text (byte 0xe9 at offset 3)"),
    ("one-char-file", ["data=text", "data.path={d}/one.txt"], "data=text has 1 token (0 train / 1 val"),
    ("directory", ["data=text", "data.path={d}"], "data.path='{d}' is not a regular file"),
    ("path-without-text", ["data.path={d}/corpus.txt"], "data.path is set but data=synthetic reads no file"),
    ("too-few-tokens", ["data.num_tokens=300"], "data=synthetic has 300 tokens (270 train / 30 val"),
    # plugins: declared options, combinations, dependencies, conflicts, the schedule
    ("plugin-option", ["plugin=[early_stopping]", "+plugin.early_stopping.patiance=3"],
     "plugin 'early_stopping': unknown option 'patiance' (did you mean 'patience'?); valid options: "),
    ("plugin-type", ["plugin=[early_stopping]", "plugin.early_stopping.patience=abc"],
     "plugin 'early_stopping': option patience='abc' must be an integer"),
    ("moe-twice", ["plugin=[moe]", "provider/ffn=moe"], "plugin 'moe' upcycles the dense FFNs of a model, but provider/ffn=moe"),
    ("plugin-listed-twice", ["plugin=[moe,moe]"], "plugin=[moe,moe] names 'moe' more than once; list each plugin once"),
    ("moe-layer-index", ["plugin=[moe]", "plugin.moe.layers=[5]"],
     "plugin 'moe': layers=[5] names block(s) [5] that the model does not have; model.num_layers=2, so valid "
     "block indices are 0..1"),
    ("moe-layer-twice", ["plugin=[moe]", "plugin.moe.layers=[0,0]"],
     "moe: layers=[0, 0] names block(s) [0] more than once; list each block once"),
    ("moe-router", ["plugin=[moe]", "plugin.moe.router=topkk"],
     "plugin 'moe': unknown router provider 'topkk' (did you mean 'topk'?); available: ['switch', 'topk']"),
    ("on-plugin-error", ["trainer.on_plugin_error=ignore"],
     "trainer.on_plugin_error='ignore' is not one of ['fail', 'warn']"),
    ("conflict", ["plugin=[early_stopping]", "+plugin.jealous={_target_: badplugins.Jealous}"],
     "plugins 'jealous' and 'early_stopping' conflict"),
    ("dependency", ["+plugin.needy={_target_: badplugins.Needy}"],
     "plugin 'needy' depends on plugin 'early_stopping', which is not loaded"),
    ("schedule-plugin", ["+schedule.enable_nosuch_at_epoch=2"],
     "schedule enable_nosuch_at_epoch: 2 names plugin 'nosuch', which does not exist"),
    ("unknown-plugin-inline", ["+plugin.nosuch={}"], "unknown plugin 'nosuch'; available: "),
    # providers, built as the model builder calls them
    ("provider-option", ["provider/attention=autopoietic", "+provider.attention.alpah=0.2"],
     "autopoietic attention: unknown option(s) ['alpah']; valid options: ['alpha', 'init_tau', 'sr_ratio']"),
    ("provider-name", ["provider/attention=registered", "provider.attention.name=nope"], "unknown attention provider 'nope'"),
    ("provider-signature", ["provider.attention._target_=badplugins.StrictAttention", "provider.attention.name=strict"],
     "attention provider 'strict': StrictAttention.create_layer"),
    # device, optimizer, paths
    ("device", ["trainer.device=cuda"], "trainer.device=cuda but CUDA is not available"),
    ("optimizer", ["optim.optimizer._target_=torch.optim.Adamw"],
     "optim.optimizer._target_='torch.optim.Adamw': module 'torch.optim' has no 'Adamw' (did you mean 'AdamW'?)"),
    ("optim-part-target", ["optim=muon", "optim.parts.hidden.optimizer._target_=torch.optim.Muonn"],
     "optim.parts.hidden.optimizer._target_='torch.optim.Muonn': module 'torch.optim' has no 'Muonn' "
     "(did you mean 'Muon'?)"),
    ("ckpt-text", ["ckpt_path={d}/notes.pt"], "ckpt_path='{d}/notes.pt' is not an APT checkpoint: not a torch.save archive"),
    ("ckpt-missing", ["ckpt_path={d}/none.pt"], "ckpt_path='{d}/none.pt' does not exist"),
    ("run-dir", ["hydra.run.dir={d}/a_file/run"], "the run directory (hydra.run.dir) '{d}/a_file/run' cannot be created"),
    ("checkpoint-dir", ["trainer.checkpoint_dir={d}/a_file/ckpt"],
     "the checkpoint directory (trainer.checkpoint_dir) '{d}/a_file/ckpt' cannot be created"),
]
# The few that also run as real train.py processes.
TRAIN_PY = ["unknown-model", "provider-key", "seed", "one-char-file", "plugin-option", "dependency", "ckpt-text",
            "plugin-listed-twice", "moe-layer-index"]


def _args(overrides: list[str], files: Path) -> list[str]:
    """TINY (for groups the case does not choose itself), then the case's overrides."""
    args = [a.replace("{d}", str(files)) for a in overrides]
    flags = args[:2] if args[0] == "--config-dir" else []
    chosen = {a.split("=", 1)[0] for a in args}
    return [*flags, *(t for t in TINY if t.split("=", 1)[0] not in chosen), *args[len(flags):]]


def _check_lines(error: str, expected: str, files: Path) -> None:
    lines = error.splitlines()
    assert "Traceback" not in error
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), error
    assert expected.replace("{d}", str(files)) in lines[0], error
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), error


@pytest.mark.parametrize(("case", "overrides", "expected"), CASES, ids=[c[0] for c in CASES])
def test_apt_check_and_train_py_give_one_line_and_exit_2(case, overrides, expected, files, monkeypatch, capsys):
    if case == "device" and os.path.exists("/dev/nvidia0"):
        pytest.skip("a GPU machine: trainer.device=cuda is valid here")
    monkeypatch.syspath_prepend(str(files))  # badplugins
    args = _args(overrides, files)
    assert apt_main(["check", *args]) == 2
    check = capsys.readouterr()
    _check_lines(check.err, expected, files)
    assert check.out == ""
    with pytest.raises(ConfigProblems) as info:  # what train.py runs before Hydra starts
        preflight(args)
    assert [line for line in info.value.lines()] == check.err.splitlines()


def test_the_table_has_more_than_thirty_distinct_inputs():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    assert set(TRAIN_PY) <= {c[0] for c in CASES}


@pytest.mark.parametrize("case", TRAIN_PY)
def test_train_py_answers_the_same_and_leaves_nothing(case, files, tmp_path):
    _, overrides, expected = next(c for c in CASES if c[0] == case)
    args = _args(overrides, files)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(files), str(REPO)]), "HYDRA_FULL_ERROR": "0"}
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    c = subprocess.run([sys.executable, "-m", "apt", "check", *args, f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == c.returncode == 2, r.stderr
    assert r.stderr == c.stderr
    _check_lines(r.stderr, expected, files)
    assert not run_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # no run dir, no outputs/
    assert "step " not in r.stdout + r.stderr


def test_a_config_error_found_in_the_job_leaves_no_run_directory(tmp_path, monkeypatch):
    """A check that fails only once Hydra made the run directory (the data file vanished
    in between) still leaves nothing behind."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be\n" * 400, encoding="utf-8")
    code = textwrap.dedent(f"""
        import runpy, sys
        import apt.app
        real = apt.app.prepare
        def prepare(argv):
            prepared = real(argv)
            import os; os.remove({str(corpus)!r})
            return prepared
        apt.app.prepare = prepare
        sys.argv = ["train.py", *{[*TINY, "data=text", f"data.path={corpus}", "data.block_size=16",
                                   "data.batch_size=2", f"hydra.run.dir={tmp_path / 'run'}"]!r}]
        runpy.run_path({str(REPO / "train.py")!r}, run_name="__main__")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert f"error: data.path='{corpus}' does not exist" in r.stderr
    assert not (tmp_path / "run").exists()
