"""apt.sample: options and the checkpoint checked before torch or any weight is loaded."""

from __future__ import annotations

from apt.sample import main


def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys):
    notes = tmp_path / "notes.pt"
    notes.write_text("hello")
    assert main([f"ckpt={notes}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: ckpt={str(notes)!r} is not an APT checkpoint: not a torch.save archive " \
                     "(corrupt or truncated, or another kind of file)"
    assert err[1].startswith("hint: usage: python -m apt.sample ckpt=<path>") and len(err) == 2
    assert main([f"ckpt={notes}", "max_new_tokns=3"]) == 2
    assert "unknown option 'max_new_tokns' (did you mean 'max_new_tokens'?)" in capsys.readouterr().err
    assert main(["max_new_tokens=0"]) == 2
    err = capsys.readouterr().err
    assert "ckpt=<path> is required" in err and "max_new_tokens must be a positive integer, got 0" in err
