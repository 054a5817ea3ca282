"""The token directory format: shards, the tail split, checks, and reading by memory map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apt.data import (
    ByteTokenizer,
    DataError,
    ShardedTokens,
    TokenFile,
    check_tokens_dir,
    open_tokens_dir,
)
from apt.data.tokens import ShardWriter, read_windows, split_sizes, split_tail, write_meta


def make_dir(path, ids, *, shard_tokens, val=0.1, test=0.0, dtype="uint16"):
    path.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(path, "train", dtype, shard_tokens)
    for chunk in np.array_split(ids, 7):  # written in uneven pieces
        writer.write(chunk)
    _, n_val, n_test = split_sizes(len(ids), val, test)
    shards = split_tail(path, writer.close(), dtype, n_val, n_test, shard_tokens)
    counts = {k: sum(n for _, n in v) for k, v in shards.items()}
    write_meta(path, {"name": path.name, "dtype": dtype, "tokens": counts, "shards": shards}, ByteTokenizer())
    return counts


@pytest.mark.parametrize(("shard_tokens", "test"), [(1000, 0.0), (37, 0.2), (10_000, 0.05)])
def test_stream_is_cut_at_its_end_into_train_val_test(tmp_path, shard_tokens, test):
    ids = (np.arange(1000) % 251).astype(np.uint16)
    counts = make_dir(tmp_path / "d", ids, shard_tokens=shard_tokens, test=test)
    assert counts == {"train": 1000 - 100 - int(1000 * test), "val": 100, "test": int(1000 * test)}
    splits, tok, meta = open_tokens_dir(tmp_path / "d")
    assert tok.kind == "byte" and meta["vocab_size"] == 256
    parts = [np.asarray(splits[s][:]) for s in ("train", "val", "test") if splits[s] is not None]
    np.testing.assert_array_equal(np.concatenate(parts), ids)
    assert (splits["test"] is None) == (test == 0)
    files = sorted(p.name for p in (tmp_path / "d").glob("*.bin"))
    assert files == sorted(name for v in meta["shards"].values() for name, _ in v)
    assert all((tmp_path / "d" / name).stat().st_size == 2 * n for v in meta["shards"].values() for name, n in v)


def test_sharded_tokens_index_like_one_array():
    parts = [np.arange(0, 5), np.arange(5, 12), np.arange(12, 13), np.arange(13, 30)]
    whole, sharded = np.arange(30), ShardedTokens(parts)
    assert len(sharded) == 30 and sharded[7] == 7 and sharded[-1] == 29
    np.testing.assert_array_equal(sharded[3:20], whole[3:20])
    starts = np.array([0, 4, 11, 12, 20])
    idx = starts[:, None] + np.arange(6)  # (B, T+1) windows across shard boundaries
    np.testing.assert_array_equal(sharded[idx], whole[idx])
    with pytest.raises(IndexError):
        sharded[np.array([30])]
    np.testing.assert_array_equal(read_windows(sharded, starts, 6), whole[idx])


def test_windows_are_read_from_files_without_a_lasting_map(tmp_path):
    ids = (np.arange(3000) * 7 % 256).astype(np.uint16)
    make_dir(tmp_path / "d", ids, shard_tokens=700)  # train: 2700 ids in 4 shard files
    train = open_tokens_dir(tmp_path / "d")[0]["train"]
    assert isinstance(train, ShardedTokens) and all(isinstance(f, TokenFile) for f in train.shards)
    starts = np.array([0, 650, 699, 700, 1390, 2600])  # inside, across one and two boundaries
    expected = ids[starts[:, None] + np.arange(100)]
    np.testing.assert_array_equal(read_windows(train, starts, 100), expected)
    np.testing.assert_array_equal(read_windows(train.shards[0], starts[:2], 50), ids[starts[:2, None] + np.arange(50)])
    np.testing.assert_array_equal(train[starts[:, None] + np.arange(100)], expected)  # indexing agrees
    np.testing.assert_array_equal(np.asarray(train.shards[1]), ids[700:1400])
    with pytest.raises(IndexError, match="runs past the 700 ids"):
        train.shards[0].windows(np.array([650]), 100)


def test_check_names_each_problem_in_one_line(tmp_path):
    d = tmp_path / "d"
    assert check_tokens_dir(None) == ["data=tokens needs data.dir=<a directory written by python -m apt.data.prepare>"]
    assert check_tokens_dir(d) == [f"data.dir='{d}' is not a directory"]
    d.mkdir()
    assert "has no meta.json; write one with: python -m apt.data.prepare" in check_tokens_dir(d)[0]
    (d / "meta.json").write_text("{not json", encoding="utf-8")
    assert "meta.json cannot be read" in check_tokens_dir(d)[0]
    make_dir(tmp_path / "ok", np.arange(2000, dtype=np.uint16) % 256, shard_tokens=500)
    assert check_tokens_dir(tmp_path / "ok", 16, 4) == []
    assert check_tokens_dir(tmp_path / "ok", 64, 4) == [  # val: 200 tokens, 2 windows
        f"data.dir='{tmp_path / 'ok'}': the val split has 200 tokens, 2 windows of block_size=64; "
        "need at least batch_size=4"]
    with open(tmp_path / "ok" / "train-00001.bin", "ab") as f:
        f.write(b"\0\0")
    (problem,) = check_tokens_dir(tmp_path / "ok", 16, 4)
    assert "train-00001.bin has 1,002 bytes, meta.json says 500 tokens (1,000 bytes)" in problem
    (tmp_path / "ok" / "train-00001.bin").unlink()
    assert "train-00001.bin is missing" in check_tokens_dir(tmp_path / "ok")[0]
    with pytest.raises(DataError, match="train-00001.bin is missing"):
        open_tokens_dir(tmp_path / "ok")
    meta = json.loads((tmp_path / "ok" / "meta.json").read_text())
    (tmp_path / "ok" / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    assert "format version 99; this APT reads version 1" in check_tokens_dir(tmp_path / "ok")[0]
    (tmp_path / "ok" / "meta.json").write_text(json.dumps({**meta, "shards": {"train": [3]}}))
    assert check_tokens_dir(tmp_path / "ok") == [
        f"data.dir='{tmp_path / 'ok'}': meta.json's tokens and shards entries are malformed"]
