"""Checkpoint files: atomic, pruned, weights_only-safe, clear errors."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from apt.training.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from apt.training.lr import WarmupCosine


def test_save_load_prune(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        mgr.save({"w": torch.full((2,), float(step)), "meta": {"step": step, "t": (1, 2)}}, step)
    assert [p.name for p in mgr.checkpoints()] == ["step-00000002.pt", "step-00000003.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    path, state = mgr.load_latest()
    assert path.name == "step-00000003.pt" and state["w"].tolist() == [3.0, 3.0]
    assert state["meta"] == {"step": 3, "t": (1, 2)}


def test_corrupt_and_foreign_files_name_the_file(tmp_path):
    bad = tmp_path / "step-00000009.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="step-00000009.pt.*corrupt or truncated"):
        load_checkpoint(bad)
    foreign = tmp_path / "other.pt"
    torch.save({"x": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an APT checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unsafe_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "apt-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_load_latest_falls_back_over_truncated(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save({"v": 1}, 1)
    p2 = mgr.save({"v": 2}, 2)
    p2.write_bytes(p2.read_bytes()[:20])
    path, state = mgr.load_latest()
    assert path.name == "step-00000001.pt" and state["v"] == 1


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = WarmupCosine(opt, warmup_steps=4, total_steps=14, decay="cosine", min_lr_ratio=0.1)
    assert [lr.factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr.factor(4) == pytest.approx(1.0)
    assert lr.factor(9) == pytest.approx(0.55)  # halfway: 0.1 + 0.9 * 0.5
    assert lr.factor(14) == pytest.approx(0.1) and lr.factor(100) == pytest.approx(0.1)
    assert lr.apply(9) == pytest.approx(0.55) and opt.param_groups[0]["lr"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="not one of"):
        WarmupCosine(opt, warmup_steps=0, total_steps=1, decay="step")


def test_unreadable_checkpoints_are_renamed_aside_and_not_counted(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        mgr.save({"v": step}, step)
    (tmp_path / "step-00000003.pt").write_bytes(b"truncated")
    path, state = mgr.load_latest()
    assert path.name == "step-00000002.pt" and state["v"] == 2
    assert (tmp_path / "step-00000003.pt.corrupt").is_file() and "renamed" in caplog.text
    assert [p.name for p in mgr.checkpoints()] == ["step-00000002.pt"]


def test_every_checkpoint_unreadable_is_an_error_not_a_fresh_start(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1000, 2000):
        (tmp_path / f"step-{step:08d}.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint") as info:
        mgr.load_latest()
    assert "step-00001000.pt" in str(info.value) and "step-00002000.pt" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00001000.pt.corrupt", "step-00002000.pt.corrupt"]
    assert CheckpointManager(tmp_path).load_latest() is None  # nothing left that looks like a checkpoint


def test_retention_never_deletes_the_checkpoint_just_written(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1000, 2000):  # newer step numbers than the run writing now
        mgr.save({"v": step}, step)
    path = mgr.save({"v": 20}, 20)
    assert path.is_file()
    assert [p.name for p in mgr.checkpoints()] == ["step-00000020.pt", "step-00002000.pt"]


def test_orphan_temp_files_of_killed_saves_are_removed(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save({"v": 1}, 1)
    orphan = tmp_path / ".step-00000002.pt.k3j2.tmp"
    orphan.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    assert mgr.remove_orphans() == [orphan]
    assert not orphan.exists() and other.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoint_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = CheckpointManager(tmp_path).save({"v": 1}, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_files_that_are_not_checkpoints_say_so_without_torch_advice(tmp_path):
    for name, write in (("text.pt", lambda p: p.write_text("hello")),
                        ("dict.pt", lambda p: torch.save({"a": 1}, p)),
                        ("tensor.pt", lambda p: torch.save(torch.zeros(2), p))):
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert name in message and "not an APT checkpoint" in message and "weights_only" not in message


def test_a_full_disk_keeps_the_earlier_checkpoint_and_names_the_file(tmp_path):
    # a file-size limit (ulimit -f) fails the write like a full disk: torch wraps the OSError
    # in its own RuntimeError, and the error is still one line naming the checkpoint
    import resource

    from apt.core.files import NoSpaceError

    mgr = CheckpointManager(tmp_path, keep_last=2)
    first = mgr.save({"w": torch.zeros(8)}, 1)
    before = first.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, hard))
    try:
        with pytest.raises(NoSpaceError) as info:
            mgr.save({"w": torch.zeros(1 << 20)}, 2)  # 4 MiB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    (line,) = str(info.value).splitlines()
    assert str(mgr.path_for(2)) in line and "File too large" in line and "free on its filesystem" in line
    assert "256 KiB" in line  # the limit that was hit
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name] and first.read_bytes() == before
    assert mgr.load_latest()[0] == first
