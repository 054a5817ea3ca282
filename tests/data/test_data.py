"""Char/byte tokenizers, sources, the token cache and the batch loader."""

from __future__ import annotations

import numpy as np
import pytest

import apt.data.loader
from apt.data import (
    BatchLoader,
    ByteTokenizer,
    CharTokenizer,
    DataError,
    TokenFile,
    load_dataset,
    tokenizer_from_dict,
)
from apt.data.loader import permute
from apt.data.sources import read_stdlib, stdlib_files, synthetic_tokens


def test_tokenizers_round_trip_and_serialise():
    text = "Hello, wörld!\n"
    for tok in (ByteTokenizer(), CharTokenizer.fit(text)):
        ids = tok.encode(text)
        assert ids.max() < tok.vocab_size
        assert tok.decode(ids) == text
        assert tokenizer_from_dict(tok.to_dict()).decode(ids) == text
    char = CharTokenizer.fit(text)
    assert char.vocab_size == len(set(text))
    with pytest.raises(ValueError, match="not in the tokenizer"):
        char.encode("xyz")


def test_text_dataset_is_cached_and_memory_mapped(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 300, encoding="utf-8")
    cfg = {"name": "text", "path": str(path), "tokenizer": "char", "cache_dir": str(tmp_path / "c")}
    first = load_dataset(cfg)
    assert isinstance(first.train, TokenFile)
    assert len(first.train) + len(first.val) == 3000 and len(first.val) == 300
    assert first.tokenizer.decode(first.train[:10]) == "abcdefghij"
    cache = first.cache_dir
    mtime = (cache / "train-00000.bin").stat().st_mtime_ns
    second = load_dataset(cfg)
    assert second.cache_dir == cache and (cache / "train-00000.bin").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.train, second.train)
    # a changed file is a different cache entry
    path.write_text("zyx" * 1000, encoding="utf-8")
    third = load_dataset(cfg)
    assert third.cache_dir != cache and third.vocab_size == 3


def test_stdlib_corpus_is_deterministic_and_capped():
    files = stdlib_files(200_000)
    assert sum(size for _, size in files) <= 200_000
    assert [p.name for p, _ in files] == [p.name for p, _ in stdlib_files(200_000)]
    assert all(p.suffix == ".py" and "test" not in p.parts for p, _ in files)


def test_stdlib_dataset_loads_the_ids_it_always_had(tmp_path):
    data = load_dataset({"name": "stdlib", "max_bytes": 100_000, "cache_dir": str(tmp_path)})
    assert data.vocab_size == 256 and 80_000 < len(data.train) <= 100_000
    assert "import" in data.tokenizer.decode(data.train[:5000])
    ids = ByteTokenizer().encode(read_stdlib(stdlib_files(100_000)))  # the pre-shard pipeline: one text
    n_val = max(1, int(len(ids) * 0.1))
    np.testing.assert_array_equal(data.train, ids[:-n_val])
    np.testing.assert_array_equal(data.val, ids[-n_val:])
    assert data.test is None


def test_text_dataset_test_split_and_bpe(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    base = {"name": "text", "path": str(path), "cache_dir": str(tmp_path / "c")}
    char = load_dataset({**base, "tokenizer": "char", "test_fraction": 0.2})
    n = len(char.train) + len(char.val) + len(char.test)
    assert n == 9600 and len(char.val) == 960 and len(char.test) == 1920
    assert char.tokenizer.decode(char.test[-8:]) == "he mat. "  # test is the end of the stream
    bpe = load_dataset({**base, "tokenizer": "bpe", "vocab_size": 260})
    assert bpe.tokenizer.kind == "bpe" and bpe.vocab_size == 260 and len(bpe.train) < 9600 * 0.9
    assert bpe.tokenizer.decode(bpe.train[:6]).startswith("the cat")
    with pytest.raises(DataError, match="data.tokenizer=bpe needs data.vocab_size"):
        load_dataset({**base, "tokenizer": "bpe"})


@pytest.mark.parametrize("task", ["copy", "cycle", "markov"])
def test_synthetic_tasks_are_deterministic(task):
    a = synthetic_tokens(task, 500, 16, 0, 8)
    np.testing.assert_array_equal(a, synthetic_tokens(task, 500, 16, 0, 8))
    assert a.max() < 16
    if task == "copy":
        np.testing.assert_array_equal(a[:8], a[8:16])


def test_unknown_dataset_and_task_errors():
    with pytest.raises(DataError, match="valid: \\['stdlib', 'text', 'synthetic', 'tokens'\\]"):
        load_dataset({"name": "nope"})
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic_tokens("nope", 10, 4, 0, 2)


def test_loader_epoch_is_a_permutation_of_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    loader = BatchLoader(tokens, batch_size=4, block_size=10, seed=3)
    starts = loader.epoch_starts(1)
    flat = np.sort(starts.reshape(-1))
    assert len(set(flat.tolist())) == flat.size  # no window twice
    assert np.all(np.diff(flat) % 10 == 0)  # non-overlapping, one offset
    np.testing.assert_array_equal(starts, loader.epoch_starts(1))  # pure function of (seed, epoch)
    assert not np.array_equal(starts, loader.epoch_starts(2))
    x, y = loader.batch(starts[0])
    assert x.shape == (4, 10) and y.shape == (4, 10)
    assert (x[:, 1:] == y[:, :-1]).all() and (y - x == 1).all()


def test_loader_more_batches_than_one_pass_and_fixed_eval():
    loader = BatchLoader(np.arange(100, dtype=np.uint16), batch_size=2, block_size=10, batches_per_epoch=12)
    assert loader.epoch_starts(1).shape == (12, 2)
    np.testing.assert_array_equal(loader.fixed_starts(3), loader.fixed_starts(3))
    with pytest.raises(ValueError, match="need at least batch_size"):
        BatchLoader(np.arange(30, dtype=np.uint16), batch_size=8, block_size=10)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097])
def test_permute_is_a_bijection(n):
    keys = np.arange(1, 7, dtype=np.uint64) * np.uint64(0x1234567)
    out = permute(np.arange(n), n, keys)
    assert sorted(out.tolist()) == list(range(n))
    np.testing.assert_array_equal(permute(np.arange(n)[::-1].copy(), n, keys), out[::-1])  # per element


def test_long_streams_use_the_lazy_order_with_the_same_guarantees(monkeypatch):
    monkeypatch.setattr(apt.data.loader, "EAGER_WINDOWS", 10)
    tokens = np.arange(5000, dtype=np.uint16)
    loader = BatchLoader(tokens, batch_size=4, block_size=10, seed=3)
    assert not loader.eager
    starts = loader.epoch_starts(1)
    flat = np.sort(starts.reshape(-1))
    assert len(set(flat.tolist())) == flat.size and np.all(np.diff(flat) % 10 == 0)
    assert starts.shape == (124, 4) and flat.max() + 11 <= len(tokens)
    np.testing.assert_array_equal(loader.epoch_rows(1, 7, 3), starts[7:10])  # per step, no epoch array
    np.testing.assert_array_equal(starts, BatchLoader(tokens, batch_size=4, block_size=10, seed=3).epoch_starts(1))
    assert not np.array_equal(starts, loader.epoch_starts(2))
    loader.batches_per_epoch = 300  # more than one pass: fresh passes follow, each a permutation
    assert loader.epoch_starts(1).shape == (300, 4)
    ranks = [BatchLoader(tokens, batch_size=2, block_size=10, seed=3, rank=r, world_size=2) for r in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([r.epoch_starts(1) for r in ranks], axis=1), starts)


# -- test split -------------------------------------------------------------------------------
def test_split_sizes_carve_the_test_split_from_the_end():
    from apt.data.tokens import split_sizes

    # test: the last int(N * test_fraction) ids; val: max(1, int(N * val_fraction)) just before
    assert split_sizes(1000, 0.1, 0.05) == (850, 100, 50)
    assert split_sizes(1000, 0.1, 0.0) == (900, 100, 0)  # test_fraction=0: today's val split
    with pytest.raises(ValueError, match="empty test split"):
        split_sizes(10, 0.1, 0.05)


def test_text_dataset_test_split_is_cached_and_keyed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 300, encoding="utf-8")
    cfg = {"name": "text", "path": str(path), "tokenizer": "char", "cache_dir": str(tmp_path / "c")}
    plain = load_dataset(cfg)
    split = load_dataset({**cfg, "test_fraction": 0.2})
    assert plain.test is None and not (plain.cache_dir / "test.bin").exists()
    assert split.cache_dir != plain.cache_dir  # test_fraction is part of the cache key
    assert (len(split.train), len(split.val), len(split.test)) == (2100, 300, 600)
    ids = plain.tokenizer.encode(path.read_text(encoding="utf-8"))
    np.testing.assert_array_equal(split.test, ids[-600:])
    np.testing.assert_array_equal(split.val, ids[-900:-600])
    np.testing.assert_array_equal(plain.val, ids[-300:])
    assert "600 test" in split.describe()
    again = load_dataset({**cfg, "test_fraction": 0.2})  # read back from the cache
    np.testing.assert_array_equal(again.test, split.test)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction < 1"):
        load_dataset({**cfg, "test_fraction": 0.9})


def test_synthetic_dataset_follows_the_same_split():
    cfg = {"name": "synthetic", "task": "cycle", "num_tokens": 1000, "period": 7}
    data = load_dataset({**cfg, "test_fraction": 0.1})
    ids = synthetic_tokens("cycle", 1000, 16, 0, 7)
    np.testing.assert_array_equal(data.test, ids[900:])
    np.testing.assert_array_equal(data.val, ids[800:900])
    assert load_dataset(cfg).test is None


def test_token_bytes_count_the_utf8_bytes_of_each_id():
    from apt.data import IdTokenizer

    np.testing.assert_array_equal(ByteTokenizer().token_bytes(), np.ones(256))
    char = CharTokenizer.fit("aé€😀")
    expected = {"a": 1, "é": 2, "€": 3, "😀": 4}
    assert {c: int(char.token_bytes()[char.encode(c)[0]]) for c in expected} == expected
    assert char.token_bytes().shape == (char.vocab_size,)
    assert IdTokenizer(16).token_bytes() is None  # synthetic ids stand for no text
