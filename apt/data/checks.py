"""The ``data`` config checked before any data is read into memory or tokenised.

:func:`check_data` is part of the run's config check (no torch, no tokenising): one function
per source in :data:`SOURCE_CHECKS` checks that source's options and estimates how many
tokens it will yield, from file sizes where it can; then every source must give each split
(train and val) enough tokens for one batch of ``block_size + 1`` windows. A file that
fails here is never tokenised, so it never leaves an entry in the token cache.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from apt.core.errors import Problem

__all__ = ["COMMON_OPTIONS", "SOURCE_CHECKS", "SOURCE_OPTIONS", "check_data", "min_split_tokens", "train_tokens"]

#: Options every source reads.
COMMON_OPTIONS = ("name", "batch_size", "block_size", "val_fraction", "test_fraction", "cache_dir")
#: Options each source reads besides :data:`COMMON_OPTIONS`; setting another is an error.
SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "stdlib": ("tokenizer", "vocab_size", "max_bytes"),
    "text": ("path", "tokenizer", "vocab_size"),
    "synthetic": ("task", "num_tokens", "vocab_size", "period", "seed"),
    "tokens": ("dir",),
}
TASKS = ("copy", "cycle", "markov")

_CHUNK = 1 << 20


def check_data(d: Mapping[str, Any], *, world_size: int | None = None) -> list[str]:
    """Problems with the ``data`` section ``d`` (a plain dict), one line each."""
    name = d.get("name")
    if name not in SOURCE_CHECKS:
        return [f"data.name={name!r} is not one of {list(SOURCE_CHECKS)}"]
    problems = _unread_options(d, str(name))
    for key in ("batch_size", "block_size"):
        if not _positive_int(d.get(key)):
            problems.append(f"data.{key} must be a positive integer, got {d.get(key)!r}")
    fraction, test = d.get("val_fraction"), d.get("test_fraction", 0.0)
    if not _number(fraction) or not 0.0 < fraction < 1.0:
        problems.append(f"data.val_fraction must be in (0, 1), got {fraction!r}")
    elif not _number(test) or not 0.0 <= test < 1.0 or fraction + test >= 1.0:
        problems.append(f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got {test!r}")
    source_problems, n_tokens = SOURCE_CHECKS[str(name)](d)
    problems += source_problems
    if not problems and n_tokens is not None:
        world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
        short = _too_short(d, n_tokens, world)
        if short:
            problems.append(short)
    return problems


def min_split_tokens(batch_size: int, block_size: int, world_size: int = 1) -> int:
    """Tokens a split needs for one global batch of ``block_size + 1`` windows (see BatchLoader)."""
    return (batch_size * world_size + 1) * block_size + 1


def train_tokens(d: Mapping[str, Any]) -> int | None:
    """Tokens of the train split where they are known without reading the data (synthetic
    data, a prepared token directory's meta.json), else None; for the run's length."""
    if d.get("name") == "synthetic" and _positive_int(d.get("num_tokens")) and _number(d.get("val_fraction")):
        n = int(d["num_tokens"])
        return n - max(1, int(n * d["val_fraction"])) - int(n * (d.get("test_fraction") or 0.0))
    if d.get("name") == "tokens" and d.get("dir"):
        try:
            meta = json.loads((Path(str(d["dir"])).expanduser() / "meta.json").read_text(encoding="utf-8"))
            n = int(meta["tokens"]["train"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return n if n > 0 else None
    return None


# -- one check per source: (problems, estimated number of tokens or None) -----------------------
def check_stdlib(d: Mapping[str, Any]) -> tuple[list[str], int | None]:
    problems = _tokenizer_problems(d)
    if not _positive_int(d.get("max_bytes")):
        return problems + [f"data.max_bytes must be a positive integer, got {d.get('max_bytes')!r}"], None
    from apt.data.sources import stdlib_files

    try:
        files = stdlib_files(int(d["max_bytes"]))
    except FileNotFoundError as exc:
        return problems + [f"data=stdlib: {exc}"], None
    return problems, sum(size for _, size in files)  # bytes: the byte tokenizer's count, char's bound


def check_text(d: Mapping[str, Any]) -> tuple[list[str], int | None]:
    problems = _tokenizer_problems(d)
    raw = d.get("path")
    if not raw or raw == "???":
        return problems + ["data=text needs data.path=<a text file>"], None
    path = Path(str(raw)).expanduser()
    shown = f"data.path={str(raw)!r}"
    if not path.exists():
        return problems + [f"{shown} does not exist"], None
    if not path.is_file():
        return problems + [f"{shown} is not a regular file"], None
    try:
        st = path.stat()
        with path.open("rb"):
            pass
    except OSError as exc:
        return problems + [f"{shown} cannot be read: {exc.strerror}"], None
    if st.st_size == 0:
        return problems + [f"{shown} is empty"], None
    if problems or d.get("tokenizer") == "byte":
        return problems, st.st_size  # byte tokenizer: one token per byte, any file
    chars = _utf8_chars(str(path.resolve()), st.st_size, st.st_mtime_ns)
    if isinstance(chars, str):
        return [Problem(f"{shown} is not UTF-8 text ({chars}), which data.tokenizer={d.get('tokenizer')} needs",
                        hint="train on its raw bytes with data.tokenizer=byte, or convert the file to UTF-8")], None
    return [], chars if d.get("tokenizer") == "char" else None  # subword counts need the tokenizer


def check_synthetic(d: Mapping[str, Any]) -> tuple[list[str], int | None]:
    problems = []
    if d.get("task") not in TASKS:
        problems.append(f"data.task={d.get('task')!r} is not one of {list(TASKS)}")
    for key in ("num_tokens", "vocab_size", "period"):
        if not _positive_int(d.get(key)):
            problems.append(f"data.{key} must be a positive integer, got {d.get(key)!r}")
    if not problems and d["vocab_size"] > 65536:
        problems.append(f"data.vocab_size={d['vocab_size']} is above 65536 (synthetic ids are uint16)")
    if not isinstance(d.get("seed"), int) or isinstance(d.get("seed"), bool) or d["seed"] < 0:
        problems.append(f"data.seed must be an integer >= 0, got {d.get('seed')!r}")
    return problems, None if problems else int(d["num_tokens"])


def check_tokens(d: Mapping[str, Any]) -> tuple[list[str], int | None]:
    """A directory written by ``python -m apt.data.prepare``: meta.json and shard sizes only."""
    from apt.data.tokens import check_tokens_dir

    if not (_positive_int(d.get("block_size")) and _positive_int(d.get("batch_size"))):
        return check_tokens_dir(d.get("dir")), None
    return check_tokens_dir(d.get("dir"), d["block_size"], d["batch_size"]), None


#: data.name -> its check.
SOURCE_CHECKS: dict[str, Callable[[Mapping[str, Any]], tuple[list[str], int | None]]] = {
    "stdlib": check_stdlib,
    "text": check_text,
    "synthetic": check_synthetic,
    "tokens": check_tokens,
}


# -- helpers ----------------------------------------------------------------------------------
def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tokenizer_problems(d: Mapping[str, Any]) -> list[str]:
    """The spec checked; a tokenizer.json or a tiktoken encoding (which the run loads whatever
    the token cache holds) loaded, so one that is broken or not available offline is refused here."""
    from apt.data.tokenizers import build_tokenizer, spec_kind

    spec = str(d.get("tokenizer"))
    try:
        if spec_kind(spec, d.get("vocab_size"), prefix="data.") in ("hf", "tiktoken"):
            build_tokenizer(spec)
    except ValueError as exc:
        text = str(exc).splitlines()[0]
        return [text if text.startswith("data.") else f"data.tokenizer={spec!r}: {text}"]
    return []


def _unread_options(d: Mapping[str, Any], name: str) -> list[str]:
    """Options set away from their default that ``name`` does not read (they would be ignored)."""
    from apt.training.schema import DataConfig

    defaults = {f.name: f.default for f in fields(DataConfig)}
    reads = set(COMMON_OPTIONS) | set(SOURCE_OPTIONS[name])
    problems = []
    for key, value in d.items():
        if key in reads or key not in defaults or value == defaults[key]:
            continue
        if key == "path":
            problems.append(Problem(f"data.path is set but data={name} reads no file",
                                    hint=f"to train on a file, choose the text source: data=text "
                                         f"data.path={value}"))
        else:
            readers = sorted(n for n, keys in SOURCE_OPTIONS.items() if key in keys)
            problems.append(f"data.{key}={value!r} is not read by data={name} "
                            f"(only by data={'/'.join(readers)})")
    return problems


@functools.lru_cache(maxsize=8)
def _utf8_chars(path: str, size: int, mtime_ns: int) -> int | str:
    """Characters in the file, or where it stops being UTF-8 (cached by path, size and mtime)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    chars, offset = 0, 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                chars += len(decoder.decode(chunk, final=not chunk))
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start:exc.start + 1]
                where = offset - pending + exc.start
                return f"byte 0x{bad[0]:02x} at offset {where}" if bad else "a truncated last character"
            if not chunk:
                return chars
            offset += len(chunk)


def _too_short(d: Mapping[str, Any], n_tokens: int, world_size: int) -> str | None:
    n_val = max(1, int(n_tokens * d["val_fraction"]))
    n_train = n_tokens - n_val - int(n_tokens * d.get("test_fraction", 0.0))
    need = min_split_tokens(d["batch_size"], d["block_size"], world_size)
    if n_train >= need and n_val >= need:
        return None
    procs = f" x {world_size} processes" if world_size > 1 else ""
    return Problem(
        f"data={d['name']} has {n_tokens:,} token{'s' * (n_tokens != 1)} ({n_train:,} train / {n_val:,} val with "
        f"data.val_fraction={d['val_fraction']}); one batch of data.batch_size={d['batch_size']}{procs} "
        f"windows of data.block_size={d['block_size']} + 1 needs {need:,} per split",
        hint="use more data, or lower data.block_size or data.batch_size")
