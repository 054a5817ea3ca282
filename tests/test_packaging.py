"""A non-editable install trains from any directory with the configs the wheel ships.

The wheel is built from this checkout and unpacked with ``pip install --target``; the test
then runs ``python -m apt train`` from an empty directory with that copy first on the path,
so the package, its ``apt/conf`` and the Optuna sweeper all come from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.max_steps=4", "trainer.eval_every=2",
        "trainer.eval_batches=1", "trainer.log_every=2", "data.num_tokens=4000", "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("apt-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_ships_configs_and_sweeper_and_no_apt_script(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    conf = {n.removeprefix("apt/conf/") for n in names if n.startswith("apt/conf/")}
    repo_conf = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert conf == repo_conf  # the one conf/ tree, whole
    assert "hydra_plugins/apt_optuna_sweeper/optuna_sweeper.py" in names
    assert not any(n.startswith(("tests/", "conf/", "scripts/")) for n in names)
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points[0]).decode() if entry_points else ""
    assert "[console_scripts]" not in scripts  # no `apt` shadowing the system's


@pytest.mark.slow
def test_installed_wheel_trains_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "work"
    (work / "mine" / "model").mkdir(parents=True)
    (work / "mine" / "model" / "pico.yaml").write_text(
        "d_model: 16\nnum_heads: 2\nnum_layers: 1\ndropout: 0.0\nbias: false\nnorm: layernorm\n"
        "position: learned\n")
    env = {**os.environ, "PYTHONPATH": str(site)}

    where = subprocess.run([sys.executable, "-c", "import apt, apt.compose as c; print(apt.__file__); "
                            "print(c.conf_dir())"], cwd=work, env=env, capture_output=True, text=True)
    pkg, conf = where.stdout.split()
    assert pkg == str(site / "apt" / "__init__.py") and conf == str(site / "apt" / "conf")

    run = subprocess.run([sys.executable, "-m", "apt", "train", "--config-dir", "mine", "model=pico",
                          *TINY[1:], "hydra.run.dir=outputs/run"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((work / "outputs" / "run" / "summary.json").read_text())
    assert summary["step"] == 4 and summary["params"] < 10_000  # the user's model=pico was used
    assert (work / "outputs" / "run" / "train.log").is_file()

    bad = subprocess.run([sys.executable, "-m", "apt", "train", "plugin=[nope]"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown plugin 'nope'")


def test_optuna_sweep_without_optuna_is_one_error_line(monkeypatch, capsys):
    import importlib.util

    from apt.cli.train import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    assert main(["hparams_search=optuna", "model=tiny"]) == 2
    assert capsys.readouterr().err == "error: hydra/sweeper=optuna needs Optuna: pip install 'apt[optuna]'\n"
