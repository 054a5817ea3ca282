"""apt.training.ckpt_format: a file's header says whether it is an APT checkpoint."""

from __future__ import annotations

import zipfile

import torch

from apt.training.ckpt_format import FORMAT, checkpoint_problem


def test_apt_checkpoints_pass_and_others_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(3)}}, good)
    assert checkpoint_problem(good) is None
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(3)}, foreign)
    assert "a torch file without a format='apt-checkpoint' entry" in checkpoint_problem(foreign)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "not a torch.save archive" in checkpoint_problem(text)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    assert "not a torch.save archive" in checkpoint_problem(truncated)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert "a zip archive without data.pkl" in checkpoint_problem(other_zip)
    assert checkpoint_problem(tmp_path / "missing.pt") == f"{str(tmp_path / 'missing.pt')!r} does not exist"
    assert checkpoint_problem(tmp_path) == f"{str(tmp_path)!r} is not a file"
