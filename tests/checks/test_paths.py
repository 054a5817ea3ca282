"""apt.checks.paths: directories a run writes are checked before it starts, not at its first save."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apt.app import check_config
from apt.core.errors import ConfigProblems
from apt.training.runlock import RunLock

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model=tiny", "data=synthetic", "trainer=debug"]


def test_a_fresh_start_where_checkpoints_exist_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000040.pt").write_bytes(b"x")
    with pytest.raises(ConfigProblems) as info:
        check_config([*TINY, f"hydra.run.dir={run_dir}"])
    (line,) = info.value.problems
    assert str(run_dir / "checkpoints") in line and "trainer.resume=true" in line and "hydra.run.dir" in line
    check_config([*TINY, f"hydra.run.dir={run_dir}", "trainer.resume=true"])  # continuing it is fine


def test_a_run_directory_in_use_is_refused_before_anything_starts(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        with pytest.raises(ConfigProblems, match="in use by pid"):
            check_config([*TINY, f"hydra.run.dir={run_dir}"])
    check_config([*TINY, f"hydra.run.dir={run_dir}"])


def test_a_read_only_checkpoint_directory_is_refused_before_training(tmp_path):
    """A directory the run cannot write is found by the check, not by the final save. Root
    writes into a mode-0555 directory, so as root the directory is a read-only mount (in a
    private mount namespace)."""
    ckpt = tmp_path / "ro"
    ckpt.mkdir()
    overrides = [*TINY, f"trainer.checkpoint_dir={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"]
    expected = f"the checkpoint directory (trainer.checkpoint_dir) {str(ckpt)!r} is not writable"
    if os.geteuid() != 0:
        ckpt.chmod(0o555)
        with pytest.raises(ConfigProblems, match=re.escape(expected)):
            check_config(overrides)
        return
    code = ("from apt.app import check_config\nfrom apt.core.errors import ConfigProblems\n"
            f"try:\n    check_config({overrides!r})\nexcept ConfigProblems as exc:\n    print(exc)\n")
    script = f"mount -t tmpfs -o ro,size=64k tmpfs {shlex.quote(str(ckpt))} && exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("root without unshare(1): no way to make a directory root cannot write")
    r = subprocess.run([unshare, "--mount", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0 and "mount" in r.stderr and "Traceback" not in r.stderr:
        pytest.skip(f"cannot mount a read-only directory here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert expected in r.stdout
