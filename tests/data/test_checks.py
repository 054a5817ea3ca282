"""apt.data.checks: the data config checked before any data is read into memory."""

from __future__ import annotations

import numpy as np
import pytest

from apt.data import checks, load_dataset
from apt.data.checks import check_data, min_split_tokens
from apt.data.tokenizers import ByteTokenizer
from apt.training.schema import DataConfig


def text(path, **kw):
    return {**vars(DataConfig()), "name": "text", "tokenizer": "char", "path": str(path), **kw}


def test_char_count_is_exact_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "_CHUNK", 7)  # split multi-byte characters between reads
    path = tmp_path / "u.txt"
    path.write_text("ÆØÅ é ü 😀 abc\n" * 300, encoding="utf-8")
    checks._utf8_chars.cache_clear()
    assert checks._utf8_chars(str(path), path.stat().st_size, path.stat().st_mtime_ns) == len(path.read_text())
    bad = tmp_path / "bad.txt"
    bad.write_bytes("ÆØ".encode() + b"\xff" + b"tail")
    assert checks._utf8_chars(str(bad), bad.stat().st_size, 0) == "byte 0xff at offset 4"


def test_size_is_checked_per_split_as_the_loader_needs_it(tmp_path):
    need = min_split_tokens(batch_size=2, block_size=8)
    assert need == 25  # (2 + 1) windows of 8 tokens, + 1
    path = tmp_path / "t.txt"
    path.write_text("x" * 250, encoding="utf-8")  # val: 25 tokens, just enough
    assert check_data(text(path, batch_size=2, block_size=8), world_size=1) == []
    (problem,) = check_data(text(path, batch_size=2, block_size=8), world_size=2)  # global batch 4
    assert "data.batch_size=2 x 2 processes" in problem and "needs 41 per split" in problem


def test_the_byte_tokenizer_reads_any_file(tmp_path):
    raw = bytes(range(256)) * 20
    path = tmp_path / "blob.bin"
    path.write_bytes(raw)
    cfg = text(path, tokenizer="byte", batch_size=2, block_size=8, cache_dir=str(tmp_path / "cache"))
    assert check_data(cfg) == []
    data = load_dataset(cfg)
    assert np.array_equal(np.concatenate([data.train, data.val]), np.frombuffer(raw, dtype=np.uint8))
    utf8 = tmp_path / "u.txt"
    utf8.write_text("héllo wörld " * 100, encoding="utf-8")
    data = load_dataset({**cfg, "path": str(utf8)})  # the same ids as before for UTF-8 text
    ids = ByteTokenizer().encode(utf8.read_text(encoding="utf-8"))
    assert np.array_equal(np.concatenate([data.train, data.val]), ids)


def test_options_the_source_does_not_read_are_errors():
    synthetic = {**vars(DataConfig()), "name": "synthetic", "vocab_size": 16, "max_bytes": 5}
    assert check_data(synthetic) == ["data.max_bytes=5 is not read by data=synthetic (only by data=stdlib)"]
    (problem,) = check_data({**vars(DataConfig()), "path": "x.txt"})
    assert problem == "data.path is set but data=stdlib reads no file"
    assert problem.hint == "to train on a file, choose the text source: data=text data.path=x.txt"


def test_a_file_too_short_to_split_never_enters_the_token_cache(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a", encoding="utf-8")
    cfg = text(path, cache_dir=str(tmp_path / "cache"))
    assert "data=text has 1 token (0 train / 1 val" in check_data(cfg)[0]
    with pytest.raises(ValueError, match="gives only 1 tokens: too few to split"):
        load_dataset(cfg)  # called directly, without the check
    assert not any((tmp_path / "cache").glob("*/meta.json"))
