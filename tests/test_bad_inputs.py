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
    _target_files(d)
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


# -- issue 22, items 4 and 6: a _target_ is checked before anything calls it, and what the run ---------
# -- would refuse when it builds the optimizer or loads the tokenizer is refused by the check ------------
#: A module whose every callable records that it ran (it must never run) and a config file that
#: points a provider at logging.config.dictConfig with a handler that runs a shell command.
EVIL = '''
from pathlib import Path

CALLED = Path(__file__).with_name("CALLED")


def boom(*args, **kwargs):
    CALLED.write_text(repr((args, kwargs)))


class NotAnOptimizer:
    def __init__(self, *args, **kwargs):
        boom(*args, **kwargs)
'''
DICTCONFIG = """\
_target_: logging.config.dictConfig
name: dictconfig
version: 1
handlers:
  h:
    "()": os.system
    command: "touch {d}/CALLED"
"""


def _target_files(d: Path) -> None:
    import json

    import numpy as np

    (d / "evil.py").write_text(EVIL, encoding="utf-8")
    (d / "conf" / "provider" / "attention").mkdir(parents=True)
    (d / "conf" / "provider" / "attention" / "dictconfig.yaml").write_text(DICTCONFIG.format(d=d), encoding="utf-8")
    tokens = d / "tokens_vocab30"  # byte-tokenizer ids (all < 30), meta.json edited to vocab_size=30
    tokens.mkdir()
    ids = (np.arange(2000) % 26).astype(np.uint16)
    (tokens / "train-00000.bin").write_bytes(ids[:1800].tobytes())
    (tokens / "val-00000.bin").write_bytes(ids[1800:].tobytes())
    meta = {"format": "apt-tokens", "version": 1, "name": "v30", "dtype": "uint16",
            "tokens": {"train": 1800, "val": 200, "test": 0},
            "shards": {"train": [["train-00000.bin", 1800]], "val": [["val-00000.bin", 200]], "test": []},
            "tokenizer_state": {"kind": "byte"}, "vocab_size": 30, "eot_id": None}
    (tokens / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    (d / "not_a_tokenizer.json").write_text('{"version": "1.0", "model": 3}', encoding="utf-8")


MUON_PART = "{params: %s, optimizer: {_target_: torch.optim.%s, _partial_: true, lr: 0.01}}"
TARGET_CASES = [
    # item 4: imported and checked before anything calls it
    ("provider-target-function", ["provider.attention._target_=builtins.print", "provider.attention.name=p"],
     "provider.attention._target_='builtins.print' is the built-in function builtins.print, not a provider of "
     "kind 'attention' (a subclass of apt.core.Provider)"),
    ("provider-target-boom", ["provider.ffn._target_=evil.boom", "provider.ffn.name=boom"],
     "provider.ffn._target_='evil.boom' is the function evil.boom, not a provider of kind 'ffn'"),
    ("provider-target-kind", ["provider.attention._target_=apt.providers.ffn.MLPProvider", "provider.attention.name=m"],
     "is the class apt.providers.ffn.MLPProvider, a provider of kind 'ffn', not a provider of kind 'attention'"),
    ("provider-config-file", ["--config-dir", "{d}/conf", "provider/attention=dictconfig"],
     "provider.attention._target_='logging.config.dictConfig' is the function logging.config.dictConfig, not a "
     "provider of kind 'attention'"),
    ("plugin-target-boom", ["+plugin.evil={_target_: evil.boom}"],
     "plugin.evil._target_='evil.boom' is the function evil.boom, not a plugin (a subclass of apt.plugins.Plugin)"),
    ("optimizer-target-system", ["optim.optimizer._target_=os.system"],
     "optim.optimizer._target_='os.system' is the built-in function "),  # posix.system
    ("optimizer-target-boom", ["optim.optimizer._target_=evil.NotAnOptimizer"],
     "optim.optimizer._target_='evil.NotAnOptimizer' is the class evil.NotAnOptimizer, not an optimizer class "
     "(a subclass of torch.optim.Optimizer)"),
    ("optimizer-target-scheduler", ["optim.optimizer._target_=torch.optim.lr_scheduler.LambdaLR"],
     "optim.optimizer._target_='torch.optim.lr_scheduler.LambdaLR' is the class torch.optim.lr_scheduler.LambdaLR, "
     "not an optimizer class"),
    ("optim-part-target-boom", ["optim=muon", "optim.parts.hidden.optimizer._target_=evil.boom"],
     "optim.parts.hidden.optimizer._target_='evil.boom' is the function evil.boom, not an optimizer class"),
    ("optim-nested-target", ["~optim.optimizer.betas", "+optim.optimizer.betas={_target_: evil.boom}"],
     "optim.optimizer.betas: a nested _target_ is not built here; give the option's value itself"),
    ("hydra-callback-target", ["+hydra.callbacks.x={_target_: evil.boom}"],
     "hydra.callbacks.x._target_='evil.boom' is the function evil.boom, not a Hydra callback class (a subclass of "
     "hydra.experimental.callback.Callback)"),
    # item 6: what building the optimizer or loading the tokenizer would refuse
    ("optim-part-shadowed", ["optim=muon", "+optim.parts.second=" + MUON_PART % ("hidden_matrices", "Muon")],
     "optim.parts.second: params=hidden_matrices takes no parameter of this model: optim.parts.hidden "
     "(params=hidden_matrices) comes first and takes all of them"),
    ("optim-parts-take-all", ["optim=muon", "optim.parts.hidden.params=matrices",
                              "+optim.parts.rest=" + MUON_PART % ("vectors", "SGD")],
     "optim.optimizer: optim.parts take every parameter and leave none for it"),
    ("sgd-nesterov", ["optim=sgd", "optim.optimizer.momentum=0"],
     "optim.optimizer: Nesterov momentum requires a momentum and zero dampening (SGD with lr=0.1, momentum=0, "
     "nesterov=True)"),
    ("muon-momentum", ["optim=muon", "optim.parts.hidden.optimizer.momentum=-1"],
     "optim.parts.hidden.optimizer: momentum should be >= 0 but is: -1 (Muon with "),
    ("adamw-eps", ["optim.optimizer.eps=-1"], "optim.optimizer: Invalid epsilon value: -1 (AdamW with "),
    ("tokens-vocab-size", ["data=tokens", "data.dir={d}/tokens_vocab30", "data.block_size=16", "data.batch_size=2"],
     "data.dir='{d}/tokens_vocab30': the tokenizer has 256 ids, meta.json says vocab_size=30"),
    ("tokenizer-json", ["data=text", "data.path={d}/corpus.txt", "data.tokenizer={d}/not_a_tokenizer.json"],
     "data.tokenizer='{d}/not_a_tokenizer.json': '{d}/not_a_tokenizer.json' is not a Hugging Face tokenizer.json"),
]
CASES += TARGET_CASES
#: Targets that would record a call (evil.CALLED) if anything called them: also run as train.py.
NEVER_CALLED = ["provider-target-boom", "provider-config-file", "plugin-target-boom", "optimizer-target-boom",
                "optim-part-target-boom", "optim-nested-target", "hydra-callback-target"]


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
    assert not (files / "CALLED").exists(), f"{case}: a _target_ was called before it was checked"


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


@pytest.mark.parametrize("case", NEVER_CALLED)
def test_train_py_never_calls_a_target_before_it_is_known(case, files, tmp_path):
    """The issue's reproduction: a provider config file whose ``_target_`` is
    logging.config.dictConfig, with a handler that runs a shell command, ran it from train.py."""
    _, overrides, expected = next(c for c in CASES if c[0] == case)
    args = _args(overrides, files)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(files), str(REPO)]), "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    _check_lines(r.stderr, expected, files)
    assert not (files / "CALLED").exists() and not (tmp_path / "run").exists()


def test_a_tiktoken_encoding_not_available_offline_is_refused_by_check_and_train(files, offline_tiktoken, capsys):
    args = _args(["data=text", f"data.path={files}/corpus.txt", "data.tokenizer=tiktoken:gpt2"], files)
    assert apt_main(["check", *args]) == 2
    check = capsys.readouterr()
    _check_lines(check.err, "data.tokenizer='tiktoken:gpt2': tiktoken encoding 'gpt2' is not available locally", files)
    assert "TIKTOKEN_CACHE_DIR" in check.err
    with pytest.raises(ConfigProblems) as info:
        preflight(args)
    assert info.value.lines() == check.err.splitlines()


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


# =================================================================================================
# Issue 22, items 5 and 7: inputs `apt check` passed while train.py failed with a traceback (5), and
# settings that could never take effect (7). Kept apart from CASES: each is run through both
# `python -m apt check` and train.py's preflight, a representative few through a real train.py.
# =================================================================================================
@pytest.fixture(scope="module")
def edge_files(tmp_path_factory) -> Path:
    """A checkpoint of another model size, token directories with an id outside the vocabulary
    and with a shard named outside the directory."""
    import json

    import numpy as np

    from apt.data import ByteTokenizer
    from apt.data.tokens import write_meta
    from apt.training.ckpt_format import FORMAT

    d = tmp_path_factory.mktemp("edge")
    tiny = {"d_model": 64, "num_heads": 2, "num_layers": 2, "d_ff": 64, "dropout": 0.0, "norm": "layernorm",
            "position": "learned", "rope_base": 10000.0, "bias": False, "max_seq_len": None}
    torch.save({"format": FORMAT, "model": {"tok_emb.weight": torch.zeros(16, 64)},
                "config": {"seed": 0, "model": tiny, "data": {"name": "synthetic", "block_size": 32}},
                "model_config": {**tiny, "vocab_size": 16}}, d / "other.pt")

    def tokens_dir(name: str, ids: np.ndarray, shard: str = "train-00000.bin") -> None:
        path = d / name
        path.mkdir()
        n_val = 200
        (path / shard).parent.mkdir(parents=True, exist_ok=True)
        ids[:-n_val].astype(np.uint16).tofile(path / shard)
        ids[-n_val:].astype(np.uint16).tofile(path / "val-00000.bin")
        write_meta(path, {"name": name, "dtype": "uint16",
                          "tokens": {"train": len(ids) - n_val, "val": n_val, "test": 0},
                          "shards": {"train": [[shard, len(ids) - n_val]], "val": [["val-00000.bin", n_val]],
                                     "test": []}}, ByteTokenizer())
        json.loads((path / "meta.json").read_text(encoding="utf-8"))  # written as prepare writes it

    ids = (np.arange(4000) % 200).astype(np.uint16)
    bad = ids.copy()
    bad[1234] = 300  # the byte tokenizer has 256 ids
    tokens_dir("ids", bad)
    tokens_dir("escape", ids, shard="../other/train-00000.bin")
    return d


# (id, overrides ({e}: the edge_files fixture), a substring of the one error line)
EDGE_CASES = [
    ("seed-range", ["seed=99999999999999999999999"],
     "seed=99999999999999999999999 is out of range; valid: 0 .. 18446744073709551615"),
    ("seed-negative", ["seed=-1"], "seed=-1 is out of range; valid: 0 .. 18446744073709551615"),
    ("betas-one", ["optim.optimizer.betas=[0.9]"],
     "optim.optimizer.betas must be 2 numbers in [0, 1) (beta1, beta2), got [0.9]"),
    ("betas-range", ["optim.optimizer.betas=[0.9,1.5]"],
     "optim.optimizer.betas must be 2 numbers in [0, 1) (beta1, beta2), got [0.9, 1.5]"),
    ("model-memory", ["model.d_model=65536"], "the model needs at least "),
    ("ckpt-other-model", ["ckpt_path={e}/other.pt"],
     "ckpt_path='{e}/other.pt' holds another model: model.d_model=64 (this run: 32); "),
    ("ckpt-empty", ["ckpt_path="], "ckpt_path is empty"),
    ("token-ids", ["data=tokens", "data.dir={e}/ids"],
     "data.dir='{e}/ids': train-00000.bin holds id 300, outside the vocabulary of 256 ids (meta.json vocab_size)"),
    ("shard-outside", ["data=tokens", "data.dir={e}/escape"],
     "data.dir='{e}/escape': meta.json names the shard '../other/train-00000.bin', which is not a file name "
     "inside the directory"),
    ("monitor", ["plugin=[early_stopping]", "plugin.early_stopping.monitor=val_acc"],
     "plugin 'early_stopping': monitor='val_acc' is not a validation metric; valid: val_loss, val_loss_se, "
     "val_tokens, val_bpb, best_val_loss"),
    ("checkpoint-monitor", ["plugin=[checkpoint]", "plugin.checkpoint.monitor=val_acc"],
     "plugin 'checkpoint': monitor='val_acc' is not a validation metric; valid: val_loss, val_loss_se, "),
]
# The few that also run as real train.py processes.
EDGE_TRAIN_PY = ["seed-range", "model-memory", "ckpt-other-model", "token-ids", "monitor"]


def _edge_args(overrides: list[str], files: Path) -> list[str]:
    return _args([a.replace("{e}", str(files)) for a in overrides], files)


def _steady(text: str) -> str:
    """``text`` without the free memory it names, which changes between two reads."""
    import re

    return re.sub(r"[\d,.]+ GiB of memory is available", "N GiB of memory is available", text)


@pytest.mark.parametrize(("case", "overrides", "expected"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_inputs_are_one_error_line_from_check_and_train_py(case, overrides, expected, edge_files, capsys):
    args = _edge_args(overrides, edge_files)
    assert apt_main(["check", *args]) == 2
    check = capsys.readouterr()
    _check_lines(check.err, expected.replace("{e}", str(edge_files)), edge_files)
    assert check.out == ""
    with pytest.raises(ConfigProblems) as info:
        preflight(args)
    assert _steady("\n".join(info.value.lines())) == _steady(check.err.rstrip("\n"))


def _train_py(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=180, env=env)


@pytest.mark.parametrize("case", EDGE_TRAIN_PY)
def test_train_py_refuses_edge_inputs_as_check_does(case, edge_files, tmp_path):
    _, overrides, expected = next(c for c in EDGE_CASES if c[0] == case)
    run_dir = tmp_path / "run"
    args = [*_edge_args(overrides, edge_files), f"hydra.run.dir={run_dir}"]
    r = _train_py(args, tmp_path)
    c = subprocess.run([sys.executable, "-m", "apt", "check", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == c.returncode == 2, r.stderr
    assert _steady(r.stderr) == _steady(c.stderr)
    _check_lines(r.stderr, expected.replace("{e}", str(edge_files)), edge_files)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory, no outputs/


def test_the_memory_estimate_names_what_it_covers_and_the_memory_available(capsys):
    assert apt_main(["check", *TINY, "model.d_model=65536"]) == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert "parameters, their gradients and the AdamW state (16 bytes per parameter; activations not counted)" \
        in line, line
    assert " GiB of memory is available (host, " in line and "model.d_model=65536" in line, line


# Settings that can never take effect in the run's length: a named warning, printed by `apt check` (exit 0)
# and by train.py (stderr and train.log), the same line. (id, overrides, a substring of the warning)
LENGTH_CASES = [
    ("warmup", ["optim.warmup_steps=100000", "trainer.max_steps=4"],
     "optim.warmup_steps=100000 is longer than the run (4 steps): the learning rate is still warming up when "
     "the run ends and never reaches optim.optimizer.lr"),
    ("enable-epoch", ["schedule=moe_align", "plugin=[moe,align]", "schedule.enable_align_at_epoch=5",
                      "trainer.max_epochs=2", "trainer.steps_per_epoch=2"],
     "schedule: enable_align_at_epoch: 5 is never reached: the run ends after 4 steps, in epoch 2 "
     "(2 steps per epoch)"),
    ("enable-epoch-bound", ["data=stdlib", "plugin=[align]", "+schedule.enable_align_at_epoch=5",
                            "trainer.max_epochs=2", "trainer.max_steps=null"],  # the epoch length: unknown unread
     "schedule: enable_align_at_epoch: 5 is never reached: the run ends in epoch 2 at the latest (trainer.max_epochs)"),
    ("enable-step", ["plugin=[align]", "+schedule.enable_align_at_step=50", "trainer.max_steps=4"],
     "schedule: enable_align_at_step: 50 is never reached: the run ends after 4 steps"),
    ("plugin-every", ["plugin=[throughput]", "plugin.throughput.every_n_steps=50", "trainer.max_steps=4"],
     "plugin 'throughput': every_n_steps=50 is never reached: the run ends after 4 steps"),
]
LENGTH_TRAIN_PY = ["warmup", "enable-epoch"]


@pytest.mark.parametrize(("case", "overrides", "expected"), LENGTH_CASES, ids=[c[0] for c in LENGTH_CASES])
def test_settings_without_effect_are_warnings_of_check_and_preflight(case, overrides, expected, capsys):
    args = _args(overrides, Path("."))
    assert apt_main(["check", *args]) == 0
    check = capsys.readouterr()
    assert check.out == "config OK\n"
    warned = [line for line in check.err.splitlines() if expected in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), check.err
    assert not preflight(args)
    assert capsys.readouterr().err == check.err  # train.py prints the same warnings before Hydra starts


@pytest.mark.parametrize("case", LENGTH_TRAIN_PY)
def test_train_py_prints_and_logs_the_same_warning_once(case, tmp_path):
    _, overrides, expected = next(c for c in LENGTH_CASES if c[0] == case)
    run_dir = tmp_path / "run"
    args = [*_args(overrides, Path(".")), "trainer.eval_batches=1", "data.num_tokens=4000",
            f"hydra.run.dir={run_dir}"]
    r = _train_py(args, tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if expected in x)
    assert line.startswith("warning: "), r.stderr
    log_text = (run_dir / "train.log").read_text(encoding="utf-8")
    assert log_text.count(expected) == 1, log_text  # the check's warning, not a second runtime copy
    assert line.removeprefix("warning: ") in log_text


def test_the_build_step_refuses_a_model_larger_than_the_gpus_free_memory(monkeypatch):
    """On a GPU the estimate is compared with the device's free memory (torch is imported by
    then), before the model is allocated. Run here with a pretend GPU of 256 MiB free."""
    import apt.build
    from apt.checks import check_run
    from apt.compose import compose
    from apt.training.distributed import DistContext

    checked = check_run(compose([*TINY, "model.d_model=2048"]))  # ~34M parameters: fits the host
    monkeypatch.setattr(apt.build, "resolve_device", lambda name: "cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (256 << 20, 80 << 30))
    try:
        with pytest.raises(ConfigProblems, match=r"the model needs at least 0\.5 GiB: .* but 0\.2 GiB of memory "
                                                 r"is available \(free on cuda\)"):
            apt.build.build(checked, DistContext())
    finally:
        checked.plugins.teardown_all()
