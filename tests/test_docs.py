"""Every example in docs/*.md runs.

Conventions of the user docs (docs/benchmarks.md, a results page, is not checked):

- ```` ```python file=NAME ```` blocks are written to NAME in a scratch directory first;
  other code can import them (the directory is on ``PYTHONPATH``).
- ```` ```bash ```` blocks: each command (``\\`` continues a line, ``#`` starts a comment)
  runs in that directory with ``bash``. ``python train.py`` runs the repository's
  train.py and is shrunk for a test: the TINY overrides below are appended for keys the
  command does not set itself, so the example runs as written, on a tiny model and a few
  steps (a ``trainer.max_steps`` above MAX_STEPS is lowered to it).
  ```` ```bash check-only ```` blocks (variations on a theme) are validated
  instead of trained: each ``python train.py ARGS`` runs as ``python -m apt check ARGS``,
  which composes and checks exactly as train.py does. ```` ```bash compose-only ````
  blocks (cluster submissions) are composed instead of launched: the first value of each
  swept key, with ``--cfg hydra``.
- ```` ```python ```` blocks of one page run in order as one script (later blocks use
  what earlier ones defined), after the bash blocks.
- ```` ```yaml ```` and ```` ```toml ```` blocks must parse.
- ```` ```text output ```` blocks must equal the standard output of the last command of
  the bash block before them; other ```` ```text ```` blocks are illustrations.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "benchmarks.md")

TINY = {
    "model": "tiny", "data": "synthetic", "trainer": "debug", "trainer.max_steps": "6",
    "trainer.eval_every": "3", "trainer.eval_batches": "1", "trainer.log_every": "3",
    "data.num_tokens": "4000", "optim.warmup_steps": "1",
}

MAX_STEPS = 12

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, dict[str, str], str]]:
    """``(language, options, code)`` for each fenced block."""
    out = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        lang = words[0] if words else ""
        opts = dict(w.split("=", 1) if "=" in w else (w, "") for w in words[1:])
        out.append((lang, opts, m.group(2)))
    return out


def commands(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _cap_steps(override: str) -> str:
    """``trainer.max_steps=N`` with N > MAX_STEPS runs MAX_STEPS steps (a test's budget)."""
    key, _, value = override.partition("=")
    if key == "trainer.max_steps" and value.isdigit() and int(value) > MAX_STEPS:
        return f"{key}={MAX_STEPS}"
    return override


def _first_value(override: str) -> str:
    """``key=a,b`` -> ``key=a`` (a sweep's first value); lists ``[a,b]`` are left alone."""
    key, eq, value = override.partition("=")
    if eq and "," in value and not value.startswith(("[", "{", "'", '"')) and "(" not in value:
        return f"{key}={value.split(',')[0]}"
    return override


def shrink(cmd: str, compose_only: bool = False, check_only: bool = False) -> str:
    """Run train.py from the repo with the TINY sizes (keys the command sets itself win).

    Only the first command of a shell list (``a || b``, ``a | b``) is rewritten.
    ``torchrun [launcher options] train.py ARGS`` is shrunk the same way and launched with
    this interpreter's ``torch.distributed.run`` (check-only and compose-only: train.py alone).
    """
    parts = re.split(r"\s+(\|\||&&|\||;)\s+", cmd, maxsplit=1)
    if len(parts) == 3:
        head, sep, tail = parts
        return f"{shrink(head, compose_only, check_only)} {sep} {tail}"
    words = shlex.split(cmd)
    if words[:1] == ["torchrun"] and "train.py" in words:
        at = words.index("train.py")
        inner = shlex.split(shrink(shlex.join(["python", *words[at:]]), compose_only, check_only))
        if compose_only or check_only:
            return shlex.join(inner)
        return shlex.join([sys.executable, "-m", "torch.distributed.run", *words[1:at], *inner[1:]])
    if words[:2] != ["python", "train.py"]:
        return cmd.replace("python ", f"{shlex.quote(sys.executable)} ", 1) \
            if cmd.startswith("python ") else cmd
    args = [_cap_steps(a) for a in words[2:]]
    if check_only:
        return shlex.join([sys.executable, "-m", "apt", "check", *args])
    given = {_key(a) for a in args if "=" in a}
    flags = next((i for i, a in enumerate(args) if a.startswith("--")), len(args))
    own_data = "data" in given  # TINY's data.* keys are the synthetic source's: not for another
    args[flags:flags] = [f"{k}={v}" for k, v in TINY.items()
                         if k not in given and not (own_data and k.startswith("data."))]
    if compose_only:  # one combination of the sweep, composed: `--cfg` excludes `-m`
        args = [_first_value(a) for a in args if a not in ("-m", "--multirun")] + ["--cfg", "hydra"]
    return shlex.join([sys.executable, str(REPO / "train.py"), *args])


@pytest.mark.slow
@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_doc_examples_run(page: Path, tmp_path: Path) -> None:
    found = blocks(page.read_text(encoding="utf-8"))
    assert found, f"{page.name} has no examples"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "MPLBACKEND": "Agg"}
    for lang, opts, code in found:
        if lang == "python" and "file" in opts:
            (tmp_path / opts["file"]).write_text(code, encoding="utf-8")
        elif lang == "yaml":
            yaml.safe_load(code)
        elif lang == "toml" and sys.version_info >= (3, 11):
            import tomllib

            tomllib.loads(code)
    last_stdout = None
    for lang, opts, code in found:
        if lang == "text" and "output" in opts:
            assert last_stdout is not None, f"{page.name}: an output block must follow a bash block"
            assert last_stdout.rstrip("\n") == code.rstrip("\n"), \
                f"{page.name}: documented output differs from the real one:\n{last_stdout}"
        if lang != "bash":
            continue
        for cmd in commands(code):
            run = shrink(cmd, compose_only="compose-only" in opts,
                         check_only="check-only" in opts)
            proc = subprocess.run(["bash", "-c", run], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{page.name}: `{cmd}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            last_stdout = proc.stdout
    script = "\n\n".join(code for lang, opts, code in found if lang == "python" and "file" not in opts)
    if script:
        (tmp_path / "_doc_script.py").write_text(script, encoding="utf-8")
        proc = subprocess.run([sys.executable, "_doc_script.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{page.name} python examples failed:\n{proc.stderr[-4000:]}"


def test_shrink_keeps_what_the_example_sets() -> None:
    cmd = shrink("python train.py -m model=small seed=1,2 trainer.max_steps=30")
    args = shlex.split(cmd)[2:]
    assert args[:4] == ["-m", "model=small", "seed=1,2", "trainer.max_steps=12"]
    assert "model=tiny" not in args and "trainer.max_steps=6" not in args and "data=synthetic" in args
    assert "trainer.max_steps=12" in shlex.split(shrink("python train.py trainer.max_steps=200"))
    composed = shlex.split(shrink("python train.py -m hydra/launcher=slurm seed=1,2 plugin=[a,b]", True))
    assert "-m" not in composed and composed[-2:] == ["--cfg", "hydra"]
    assert "seed=1" in composed and "plugin=[a,b]" in composed
    piped = shrink('python train.py -m seed=1,2 || echo "failed"')
    assert piped.endswith(' || echo "failed"') and "model=tiny" in piped
    cfg_job = shlex.split(shrink("python train.py model=small --cfg job"))
    assert cfg_job[2] == "model=small" and cfg_job[-2:] == ["--cfg", "job"]
    checked = shlex.split(shrink("python train.py model=tiny", check_only=True))
    assert checked[1:] == ["-m", "apt", "check", "model=tiny"]
    ddp = shlex.split(shrink("torchrun --nproc_per_node=2 train.py model=small"))
    assert ddp[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert ddp[4:6] == [str(REPO / "train.py"), "model=small"] and "data=synthetic" in ddp
