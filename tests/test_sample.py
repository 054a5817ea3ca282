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
    assert err[1].startswith("hint: usage: python -m apt sample ckpt=<path>") and len(err) == 2
    assert main([f"ckpt={notes}", "max_new_tokns=3"]) == 2
    assert "unknown option 'max_new_tokns' (did you mean 'max_new_tokens'?)" in capsys.readouterr().err
    assert main(["max_new_tokens=0"]) == 2
    err = capsys.readouterr().err
    assert "ckpt=<path> is required" in err and "max_new_tokens must be a positive integer, got 0" in err


def test_help_prints_usage_and_exits_0(capsys):
    for flag in ("--help", "-h"):
        assert main([flag]) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: python -m apt sample ckpt=<path>") and "prompt" in out


def test_the_prompt_is_a_literal_string():
    from apt.sample import parse_args

    args = parse_args(["ckpt=x.pt", "prompt=ROMEO:", "max_new_tokens=3", "top_k=null", "temperature=0"])
    assert args["prompt"] == "ROMEO:" and args["max_new_tokens"] == 3 and args["top_k"] is None
    assert args["temperature"] == 0
    assert parse_args(["prompt={a: 1}", "ckpt=x"])["prompt"] == "{a: 1}"
    assert parse_args(["prompt=42", "ckpt=x"])["prompt"] == "42"
    assert parse_args(["prompt=a=b", "ckpt=x"])["prompt"] == "a=b"
