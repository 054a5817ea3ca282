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
