"""apt.resume: `trainer.resume=true hydra.run.dir=D` is the run saved in D, not the defaults.

The saved run is made as Hydra makes it (.hydra/config.yaml and .hydra/overrides.yaml of a
composed command line); the end-to-end commands of the README run in tests/test_train.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from apt.app import preflight
from apt.compose import compose
from apt.core.errors import ConfigProblems
from apt.resume import RESUMABLE, record_resume, resume_plan, resume_problems

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ["model=tiny", "data=synthetic", "trainer=debug", "trainer.max_steps=7", "optim.decay=linear",
            "trainer.checkpoint_every=3"]


def _saved_run(run_dir: Path, overrides=ORIGINAL) -> Path:
    """A run directory as train.py leaves it: the composed config and its overrides."""
    hydra = run_dir / ".hydra"
    hydra.mkdir(parents=True)
    OmegaConf.save(compose(list(overrides)), hydra / "config.yaml")
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)), encoding="utf-8")
    return run_dir


def test_resume_composes_the_saved_config_not_the_defaults(tmp_path):
    run_dir = _saved_run(tmp_path / "long")
    plan = resume_plan(["trainer.resume=true", f"hydra.run.dir={run_dir}"])
    cfg = plan.config
    assert cfg.model.d_model == 32 and cfg.data.name == "synthetic"  # not model=small, data=stdlib
    assert cfg.trainer.max_steps == 7 and cfg.optim.decay == "linear" and cfg.trainer.checkpoint_every == 3
    assert cfg.trainer.resume is True
    assert plan.run_dir == run_dir and plan.changed == ["trainer.resume"]
    assert plan.history == [*ORIGINAL, "trainer.resume=true"]


def test_resumable_overrides_apply_and_the_history_is_appended(tmp_path):
    run_dir = _saved_run(tmp_path / "long")
    plan = resume_plan(["trainer.resume=true", "trainer.max_steps=20", "trainer.progress=false",
                        f"hydra.run.dir={run_dir}"])
    assert plan.config.trainer.max_steps == 20 and plan.config.trainer.progress is False
    assert plan.config.model.d_model == 32
    record_resume(plan)
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.trainer.max_steps == 20 and saved.model.d_model == 32
    history = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert history == [*ORIGINAL, "trainer.resume=true", "trainer.max_steps=20", "trainer.progress=false"]
    # the history still composes the run, and a second resume starts from it
    assert compose(history).trainer.max_steps == 20
    again = resume_plan(["trainer.resume=true", f"hydra.run.dir={run_dir}"])
    assert again.config.trainer.max_steps == 20 and again.changed == []


def test_retyping_the_original_command_line_is_no_change(tmp_path):
    run_dir = _saved_run(tmp_path / "long")
    plan = resume_plan([*ORIGINAL, "trainer.resume=true", f"hydra.run.dir={run_dir}"])
    assert plan.changed == ["trainer.resume"]


def test_other_differences_are_one_error_listing_the_keys(tmp_path):
    run_dir = _saved_run(tmp_path / "long")
    with pytest.raises(ConfigProblems) as info:
        resume_plan(["trainer.resume=true", "optim.decay=cosine", "seed=3", "trainer.max_steps=9",
                     f"hydra.run.dir={run_dir}"])
    (line,) = info.value.problems
    head, resumable = line.split("(resumable: ")
    assert "optim.decay" in head and "seed" in head and "max_steps" not in head and str(run_dir) in head
    assert "trainer.resume/max_steps/" in resumable  # names the resumable keys too
    with pytest.raises(ConfigProblems, match="model.d_model"):
        resume_plan(["trainer.resume=true", "model=small", f"hydra.run.dir={run_dir}"])


def test_no_saved_config_is_a_fresh_composition(tmp_path):
    assert resume_plan(["trainer.resume=true", f"hydra.run.dir={tmp_path / 'new'}"]) is None
    run_dir = _saved_run(tmp_path / "long")
    assert resume_plan([f"hydra.run.dir={run_dir}", "trainer.max_steps=3"]) is None  # no resume asked


def test_preflight_checks_the_saved_config(tmp_path):
    run_dir = _saved_run(tmp_path / "long", [*ORIGINAL, "trainer.device=cpu"])
    assert preflight(["trainer.resume=true", f"hydra.run.dir={run_dir}"]) is False
    with pytest.raises(ConfigProblems, match="optim.decay"):
        preflight(["trainer.resume=true", "optim.decay=cosine", f"hydra.run.dir={run_dir}"])


def test_the_checkpoint_config_guards_every_other_path():
    """A multirun job or a run directory without .hydra/: the checkpoint's own config decides."""
    saved = {"seed": 1, "trainer": {"max_steps": 10, "resume": False, "lr_note": [1, 2]}, "model": {"d_model": 32}}
    now = {"seed": 1, "trainer": {"max_steps": 20, "resume": True, "lr_note": [1, 2]}, "model": {"d_model": 32}}
    assert resume_problems(now, saved) == []
    now["model"]["d_model"] = 64
    now["trainer"]["lr_note"] = [1, 3]
    (line,) = resume_problems(now, saved)
    assert "model.d_model" in line and "trainer.lr_note" in line and "trainer.max_steps" not in line.split(";")[0]
    assert {"trainer.max_steps", "trainer.resume"} <= set(RESUMABLE)


def test_python_m_apt_train_shows_the_resumed_config(tmp_path):
    run_dir = _saved_run(tmp_path / "long")
    r = subprocess.run([sys.executable, "-m", "apt", "train", "trainer.resume=true", f"hydra.run.dir={run_dir}",
                        "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["model"]["d_model"] == 32 and shown["optim"]["decay"] == "linear" and shown["trainer"]["resume"]


def test_a_run_started_from_a_file_can_be_resumed(tmp_path):
    """ckpt_path is where a run starts; with trainer.resume=true it is used only while the run
    directory has no checkpoint of its own (a requeued job started from a file continues)."""
    from apt.app import check_config
    from apt.training.checkpoint import CheckpointManager

    start = CheckpointManager(tmp_path / "from").save({"v": 1}, 1)
    check_config(["model=tiny", "data=synthetic", "trainer=debug", "trainer.resume=true", f"ckpt_path={start}",
                  f"hydra.run.dir={tmp_path / 'run'}"])
