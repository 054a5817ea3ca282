"""The on-disk format of prepared tokens, and reading it back by memory map.

A token directory (written by ``python -m apt.data.prepare``, and by the token cache of
``data=text`` / ``data=stdlib``) holds::

    meta.json              dtype, vocab_size, token counts and shard list per split,
                           tokenizer spec and state, source, creation time
    tokenizer.json         for Hugging Face tokenizers (bpe, a given tokenizer.json)
    train-00000.bin ...    raw little-endian uint16 (vocab <= 65,536) or uint32 ids
    val-00000.bin ...
    test-00000.bin ...     only when a test split was asked for

The splits are one token stream cut at its end: ``test`` is the last ``n_test`` ids, ``val``
the ``n_val`` ids before them, ``train`` the rest. Reading checks the shards against
``meta.json``: each is a file name inside the directory, its size matches, and no id is
outside the vocabulary (one chunked read per shard, cached by size and mtime).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from apt.data.errors import DataError
from apt.data.tokenizers import Tokenizer, tokenizer_from_dict

__all__ = ["FORMAT", "FORMAT_VERSION", "SPLITS", "ShardWriter", "ShardedTokens", "TokenFile", "check_tokens_dir",
           "open_tokens_dir", "read_windows", "split_sizes", "split_tail", "write_meta"]

FORMAT, FORMAT_VERSION = "apt-tokens", 1
SPLITS = ("train", "val", "test")
_COPY_TOKENS = 1 << 24  # ids moved per read when splitting the tail off (32-64 MB)


def split_sizes(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` for a stream of ``total`` ids: val at least 1 id."""
    n_val = max(1, int(total * val_fraction))
    n_test = int(total * test_fraction)
    if test_fraction > 0 and n_test == 0:  # asked for a test split: never silently none
        raise DataError(f"data.test_fraction={test_fraction} of {total:,} tokens is an empty test split")
    return total - n_val - n_test, n_val, n_test


class ShardWriter:
    """Appends ids to ``<dir>/<split>-NNNNN.bin`` files of at most ``shard_tokens`` ids each."""

    def __init__(self, directory: Path, split: str, dtype: str, shard_tokens: int) -> None:
        self.directory, self.split, self.dtype = Path(directory), split, np.dtype(dtype)
        self.shard_tokens = int(shard_tokens)
        self.shards: list[list[Any]] = []  # [file name, tokens]
        self._file: Any = None

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=self.dtype)
        while ids.size:
            if self._file is None or self.shards[-1][1] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1][1]
            part, ids = ids[:room], ids[room:]
            self._file.write(part.tobytes())
            self.shards[-1][1] += int(part.size)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.shards)

    def close(self) -> list[list[Any]]:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.shards

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file = open(self.directory / name, "wb")  # noqa: SIM115 - closed in close()
        self.shards.append([name, 0])


def split_tail(directory: Path, shards: list[list[Any]], dtype: str, n_val: int, n_test: int,
               shard_tokens: int) -> dict[str, list[list[Any]]]:
    """Move the last ``n_val + n_test`` ids of the ``train`` shards into val and test shards.

    Copies in fixed-size reads (never the whole tail in memory), then truncates the shard
    the train split ends in and deletes the ones after it.
    """
    directory, item = Path(directory), np.dtype(dtype).itemsize
    n_train = sum(n for _, n in shards) - n_val - n_test
    out = {"val": ShardWriter(directory, "val", dtype, shard_tokens),
           "test": ShardWriter(directory, "test", dtype, shard_tokens)}
    pos, kept = 0, []
    for name, n in shards:
        lo = max(n_train - pos, 0)  # first id of this shard that leaves train
        if lo > 0:
            kept.append([name, min(n, lo)])
        for start in range(lo, n, _COPY_TOKENS):
            count = min(_COPY_TOKENS, n - start)
            ids = np.fromfile(directory / name, dtype=dtype, count=count, offset=start * item)
            global_start = pos + start
            to_val = max(0, min(n_train + n_val - global_start, count))
            out["val"].write(ids[:to_val])
            out["test"].write(ids[to_val:])
        if lo < n:
            if lo == 0:
                (directory / name).unlink()
            else:
                with open(directory / name, "r+b") as f:
                    f.truncate(lo * item)
        pos += n
    return {"train": kept, "val": out["val"].close(), "test": out["test"].close()}


def write_meta(directory: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    """Write ``meta.json`` plus the tokenizer (a Hugging Face one as ``tokenizer.json`` beside
    it); returns the meta.json content."""
    state = tokenizer.to_dict()
    if "json" in state:
        (Path(directory) / "tokenizer.json").write_text(state.pop("json"), encoding="utf-8")
        state["file"] = "tokenizer.json"
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **meta, "tokenizer_state": state,
            "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id}
    (Path(directory) / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def read_windows(tokens: Any, starts: np.ndarray, length: int) -> np.ndarray:
    """``(B, length)`` ids: the windows ``tokens[s : s + length]`` for each start ``s``.

    Token files read them with positioned reads (no mapping); arrays by fancy indexing.
    """
    reader = getattr(tokens, "windows", None)
    if reader is not None:
        return reader(starts, length)
    return tokens[np.asarray(starts)[:, None] + np.arange(length)]


class TokenFile:
    """One shard file as a 1-D read-only id array that never stays mapped.

    A memory map that stays open keeps every page a run has touched in the process's RSS
    (on current kernels a whole 2 MB folio per window read): over a long run, the whole
    file. Training batches are read with ``preadv`` (:meth:`windows`); other indexing maps
    the file for that one access, as nanoGPT's ``get_batch`` does. Either way RSS stays
    flat for any corpus size. ``np.asarray(token_file)`` gives a plain memmap.
    """

    def __init__(self, path: str | Path, dtype: str | np.dtype) -> None:
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self._len = self.path.stat().st_size // self.dtype.itemsize

    def __len__(self) -> int:
        return self._len

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``(B, length)``: the ids from each start (all inside the file)."""
        if not hasattr(os, "preadv"):  # not on every platform
            return self[np.asarray(starts)[:, None] + np.arange(length)]
        out = np.empty((len(starts), int(length)), dtype=self.dtype)
        size = out.shape[1] * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for row, start in zip(out, starts, strict=True):
                if os.preadv(fd, [row], int(start) * self.dtype.itemsize) != size:
                    raise IndexError(f"window at {int(start)} of {length} ids runs past the {self._len:,} "
                                     f"ids of {self.path}")
        finally:
            os.close(fd)
        return out

    def __getitem__(self, index: Any) -> Any:
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self._len,))
        out = mapped[index]
        return out if isinstance(out, np.generic) else np.array(out)  # a copy: the map closes here

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self._len,))
        return mapped if dtype is None else mapped.astype(dtype)


class ShardedTokens:
    """Several shards read as one 1-D id stream (``len``, ints, slices, and integer arrays
    of any shape, as :class:`~apt.data.BatchLoader` indexes it).

    A window that crosses a shard boundary reads from both shards; nothing is read until
    it is indexed.
    """

    def __init__(self, shards: list[Any]) -> None:
        self.shards = shards
        self.dtype = shards[0].dtype
        sizes = np.array([len(s) for s in shards], dtype=np.int64)
        self._ends = np.cumsum(sizes)
        self._starts = self._ends - sizes

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            parts = [shard[max(start - lo, 0):min(stop - lo, len(shard))]
                     for shard, lo, hi in zip(self.shards, self._starts, self._ends, strict=True)
                     if lo < stop and hi > start]
            return np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)
        idx = np.asarray(index)
        if idx.ndim == 0:
            return self[idx.reshape(1)][0]
        flat = idx.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self):,} tokens")
        which = np.searchsorted(self._ends, flat, side="right")  # (N,) shard of each index
        out = np.empty(flat.shape, dtype=self.dtype)
        for k in np.unique(which):
            mask = which == k
            out[mask] = self.shards[k][flat[mask] - self._starts[k]]
        return out.reshape(idx.shape)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``(B, length)``: the ids from each start; a window may span shards."""
        starts = np.asarray(starts, dtype=np.int64)
        first = np.searchsorted(self._ends, starts, side="right")  # shard of each start
        inside = starts + length <= self._ends[np.minimum(first, len(self.shards) - 1)]
        out = np.empty((len(starts), int(length)), dtype=self.dtype)
        for k in np.unique(first[inside]):
            rows = np.flatnonzero(inside & (first == k))
            out[rows] = read_windows(self.shards[k], starts[rows] - self._starts[k], length)
        for row in np.flatnonzero(~inside):  # crosses a boundary: read it piecewise
            out[row] = self[int(starts[row]):int(starts[row]) + length]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def _read_meta(path: Path, where: str, problems: list[str]) -> dict[str, Any] | None:
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        problems.append(f"{where} has no meta.json; write one with: python -m apt.data.prepare "
                        f"input=<corpus> out={path} tokenizer=<spec>")
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{where}: meta.json cannot be read: {exc}")
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        problems.append(f"{where}: meta.json is not an APT token directory (format {FORMAT!r} expected)")
        return None
    if meta.get("version") != FORMAT_VERSION:
        problems.append(f"{where}: meta.json has format version {meta.get('version')!r}; this APT reads "
                        f"version {FORMAT_VERSION}: prepare the corpus again")
        return None
    return meta


def check_tokens_dir(path: str | Path | None, block_size: int | None = None,
                     batch_size: int | None = None) -> list[str]:
    """Problems of a token directory, one readable line each; empty when it can be trained on.

    Torch-free (reads ``meta.json``, stats the shard files, reads each shard once for its
    largest id): for config validation before anything is built. With ``block_size`` and ``batch_size`` also checks
    that train and val (and test, when present) hold at least one batch of windows.
    """
    if path is None or str(path) in ("", "???"):
        return ["data=tokens needs data.dir=<a directory written by python -m apt.data.prepare>"]
    path = Path(str(path)).expanduser()
    where = f"data.dir={str(path)!r}"
    if not path.is_dir():
        return [f"{where} is not a directory"]
    problems: list[str] = []
    meta = _read_meta(path, where, problems)
    if meta is None:
        return problems
    dtype, vocab = meta.get("dtype"), meta.get("vocab_size")
    if dtype not in ("uint16", "uint32"):
        return [f"{where}: meta.json dtype {dtype!r} is not 'uint16' or 'uint32'"]
    if not isinstance(vocab, int) or vocab <= 0 or (dtype == "uint16" and vocab > 65536):
        problems.append(f"{where}: meta.json vocab_size {vocab!r} is not a positive int that {dtype} holds")
    state = meta.get("tokenizer_state")
    if not isinstance(state, dict) or not state.get("kind"):
        problems.append(f"{where}: meta.json has no tokenizer_state")
    elif state.get("file") and not (path / str(state["file"])).is_file():
        problems.append(f"{where}: the tokenizer file {state['file']!r} that meta.json names is missing")
    if not problems:  # the tokenizer the run loads, with the vocabulary meta.json promises
        try:
            _load_tokenizer(path, meta)
        except DataError as exc:
            problems.append(str(exc))
    item = np.dtype(dtype).itemsize
    counts, shards = meta.get("tokens"), meta.get("shards")
    try:
        for split in SPLITS:
            int(counts.get(split, 0))
            [(str(name), int(n)) for name, n in shards.get(split) or []]
    except (AttributeError, TypeError, ValueError):
        return [*problems, f"{where}: meta.json's tokens and shards entries are malformed"]
    for split in SPLITS:
        listed = shards.get(split) or []
        if split != "test" and not listed:
            problems.append(f"{where}: meta.json lists no {split} shards")
            continue
        if sum(int(n) for _, n in listed) != int(counts.get(split, 0)):
            problems.append(f"{where}: the {split} shards in meta.json do not add up to its "
                            f"{counts.get(split, 0)} {split} tokens")
        for name, n in listed:
            if not _plain_name(str(name)):
                problems.append(f"{where}: meta.json names the shard {str(name)!r}, which is not a file name "
                                "inside the directory")
                continue
            file = path / str(name)
            size = file.stat().st_size if file.is_file() else None
            if size != int(n) * item:
                have = "is missing" if size is None else f"has {size:,} bytes"
                problems.append(f"{where}: {name} {have}, meta.json says {int(n):,} tokens "
                                f"({int(n) * item:,} bytes); the directory is incomplete or changed "
                                "after prepare")
    if problems:
        return problems
    for split in SPLITS:
        for name, _ in shards.get(split) or []:
            file = path / str(name)
            st = file.stat()
            top = _max_id(str(file.resolve()), dtype, st.st_size, st.st_mtime_ns)
            if top is not None and top >= vocab:
                problems.append(f"{where}: {name} holds id {top}, outside the vocabulary of {vocab} ids "
                                "(meta.json vocab_size); the directory was changed after prepare, or "
                                "prepare it again")
                break
    if problems or block_size is None or batch_size is None:
        return problems
    for split in SPLITS:
        n = int(counts.get(split, 0))
        if split == "test" and n == 0:
            continue
        windows = (n - 1) // int(block_size) - 1  # as BatchLoader counts them
        if windows < int(batch_size):
            problems.append(f"{where}: the {split} split has {n:,} tokens, {max(windows, 0)} windows of "
                            f"block_size={block_size}; need at least batch_size={batch_size}")
    return problems


def _plain_name(name: str) -> bool:
    """A shard is named by a file name in the token directory, never a path out of it."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


@functools.lru_cache(maxsize=64)
def _max_id(file: str, dtype: str, size: int, mtime_ns: int) -> int | None:
    """The largest id in a shard (read in chunks, never mapped whole; cached by size and mtime,
    so the run's second check and the data load do not read it again); None when empty."""
    top = None
    with open(file, "rb") as fh:
        while chunk := fh.read(_COPY_TOKENS * np.dtype(dtype).itemsize):
            m = int(np.frombuffer(chunk, dtype=dtype).max())
            top = m if top is None else max(top, m)
    return top


def open_tokens_dir(path: str | Path) -> tuple[dict[str, Any], Tokenizer, dict[str, Any]]:
    """``({split: ids or None}, tokenizer, meta)``: each split a :class:`TokenFile`, or a
    :class:`ShardedTokens` over several."""
    problems = check_tokens_dir(path)
    if problems:
        raise DataError(problems[0])
    path = Path(str(path)).expanduser()
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    tokenizer = _load_tokenizer(path, meta)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        files = [TokenFile(path / name, meta["dtype"]) for name, n in meta["shards"].get(split) or [] if int(n) > 0]
        splits[split] = None if not files else files[0] if len(files) == 1 else ShardedTokens(files)
    return splits, tokenizer, meta


def _load_tokenizer(path: Path, meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer of the token directory ``path``, checked against its meta.json's vocab_size.

    The config check and the run both load it (a tiktoken encoding may be unavailable
    offline; a hand-edited vocab_size may disagree), so the check refuses what the run would;
    the last few loads are kept, keyed by the files' sizes and times.
    """
    files = [path / "meta.json"] + ([path / str(meta["tokenizer_state"]["file"])]
                                    if meta["tokenizer_state"].get("file") else [])
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in (f.stat() for f in files))
    return _cached_tokenizer(str(path), stamp)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(directory: str, stamp: tuple[tuple[int, int], ...]) -> Tokenizer:
    path = Path(directory)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    state = dict(meta["tokenizer_state"])
    where = f"data.dir={directory!r}"
    try:
        if "file" in state:
            state["json"] = (path / state.pop("file")).read_text(encoding="utf-8")
        tokenizer = tokenizer_from_dict(state)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{where}: its tokenizer cannot be loaded: {str(exc).splitlines()[0]}") from None
    if tokenizer.vocab_size != meta["vocab_size"]:
        raise DataError(f"{where}: the tokenizer has {tokenizer.vocab_size} ids, meta.json says "
                        f"vocab_size={meta['vocab_size']}")
    return tokenizer
