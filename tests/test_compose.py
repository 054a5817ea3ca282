"""apt.compose: train.py's config composed, sweeps expanded, Hydra's errors in one line."""

from __future__ import annotations

import pytest

from apt.compose import compose, config_groups, sweep_variants
from apt.core.errors import ConfigProblems


def test_sweep_variants_try_every_value_once():
    variants = sweep_variants(["model=tiny", "seed=1,2,3", "plugin=[],[logging]", "trainer.max_steps=range(1,3)"])
    assert variants[0] == ["model=tiny", "seed=1", "plugin=[]", "trainer.max_steps=1"]
    tried = {v for variant in variants for v in variant}
    assert {"seed=2", "seed=3", "plugin=[logging]", "trainer.max_steps=2"} <= tried
    assert len(variants) == 1 + 2 + 1 + 1  # not the 12 of the cartesian product
    with pytest.raises(ConfigProblems, match=r"cannot parse override 'seed=1,\['"):
        sweep_variants(["seed=1,["])


def test_a_typo_in_any_swept_value_is_found():
    for overrides in sweep_variants(["model=tiny,tinyy"])[:1]:
        compose(overrides)
    with pytest.raises(ConfigProblems, match="unknown model 'tinyy'"):
        for overrides in sweep_variants(["model=tiny,tinyy"]):
            compose(overrides)


def test_config_groups_are_listed_from_the_directories(tmp_path):
    groups = config_groups()
    assert groups["model"] == ["modern", "small", "tiny"] and "provider/attention" in groups
    assert not any(g.startswith("hydra") for g in groups)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "huge.yaml").write_text("d_model: 1024\n")
    assert "huge" in config_groups(tmp_path)["model"]


def test_a_value_of_the_wrong_type_names_the_expected_type():
    with pytest.raises(ConfigProblems) as info:
        compose(["trainer.progress=maybe"])
    assert info.value.problems == ["trainer.progress must be a boolean, got 'maybe'"]


def _user_conf(root):
    """A user's --config-dir: its own trainer/debug.yaml and config.yaml (APT's, seed changed)."""
    from apt.compose import conf_dir

    (root / "trainer").mkdir(parents=True)
    (root / "trainer" / "debug.yaml").write_text(
        "defaults:\n  - /schema/trainer@_here_\n  - _self_\nmax_steps: 3\ndevice: cpu\nprogress: false\nplot: false\n")
    text = (conf_dir() / "config.yaml").read_text(encoding="utf-8")
    assert "\nseed: 1337" in text
    (root / "config.yaml").write_text(text.replace("\nseed: 1337", "\nseed: 4242"), encoding="utf-8")
    return root


def test_config_dir_is_searched_in_front_of_apts_configs(tmp_path):
    mine = _user_conf(tmp_path / "myconf")
    cfg = compose(["trainer=debug"], mine)
    assert cfg.trainer.max_steps == 3 and cfg.trainer.eval_every != 10  # the user's debug.yaml, not APT's
    assert cfg.seed == 4242  # the user's config.yaml is the primary config
    assert compose(["model=tiny"], mine).model.d_model == compose(["model=tiny"]).model.d_model  # APT's groups stay


def test_train_py_reads_the_config_dir_in_front_of_apts_configs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    mine = _user_conf(tmp_path / "myconf")
    out = subprocess.run([sys.executable, str(repo / "train.py"), "--config-dir", str(mine), "trainer=debug",
                          "model=tiny", "--cfg", "job"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "seed: 4242" in out.stdout and "max_steps: 3" in out.stdout


def test_train_py_reads_a_config_dir_without_its_own_config_yaml(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    mine = _user_conf(tmp_path / "myconf")
    (mine / "config.yaml").unlink()
    out = subprocess.run([sys.executable, str(repo / "train.py"), "--cfg", "job", "--config-dir", str(mine),
                          "trainer=debug", "model=tiny"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "seed: 1337" in out.stdout and "max_steps: 3" in out.stdout
