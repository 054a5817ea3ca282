"""A run's token streams: prepared token directories, and the sources tokenised on demand.

``data=tokens`` maps a directory written by ``python -m apt.data.prepare``. ``data=text`` and
``data=stdlib`` run the same preparation once per (source, tokenizer, split fractions) into
a cache directory of the same format, so later runs (and every job of a multirun) map
those files instead of re-reading the corpus, and the pages are shared between processes
through the page cache. ``data=synthetic`` is small and generated in memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apt.data import sources
from apt.data.corpus import StringCorpus, TextCorpus
from apt.data.errors import DataError
from apt.data.tokenizers import IdTokenizer, Tokenizer, spec_kind
from apt.data.tokens import ShardedTokens, TokenFile, open_tokens_dir, split_sizes

__all__ = ["CACHE_VERSION", "DATASETS", "TokenArray", "TokenData", "default_cache_dir", "load_dataset"]

DATASETS = ("stdlib", "text", "synthetic", "tokens")
CACHE_VERSION = 2
TokenArray = np.ndarray | TokenFile | ShardedTokens  # 1-D ids: an array, a shard file, or several as one


@dataclass
class TokenData:
    """Train/val (and test) token ids, usually memory-mapped shard files, and the tokenizer that made them."""

    train: TokenArray
    val: TokenArray
    tokenizer: Tokenizer
    name: str
    cache_dir: Path | None = None
    test: TokenArray | None = None  # None: no test split

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def describe(self) -> str:
        test = f" / {len(self.test):,} test" if self.test is not None else ""
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} val{test} tokens, "
                f"vocab {self.vocab_size} ({self.tokenizer.kind})")


def default_cache_dir() -> Path:
    """``$APT_CACHE_DIR`` or ``~/.cache/apt/tokens``."""
    env = os.environ.get("APT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "apt" / "tokens"


def load_dataset(cfg: Mapping[str, Any]) -> TokenData:
    """Tokens for the ``data`` config group (``name`` is one of :data:`DATASETS`).

    Bad input (a missing file, a broken token directory, an unknown tokenizer) raises
    :class:`~apt.data.errors.DataError` with one readable line.
    """
    name = cfg.get("name")
    if name == "tokens":
        directory = cfg.get("dir")
        splits, tok, meta = open_tokens_dir(directory if directory is not None else "")
        return TokenData(splits["train"], splits["val"], tok, f"tokens:{meta.get('name')}",
                         Path(str(directory)).expanduser(), splits["test"])
    val_fraction = float(cfg.get("val_fraction", 0.1))
    test_fraction = float(cfg.get("test_fraction", 0.0) or 0.0)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, "
                        f"got {test_fraction}")
    if name == "synthetic":
        return _synthetic(cfg, val_fraction, test_fraction)
    if name not in ("stdlib", "text"):
        raise DataError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
    spec = str(cfg.get("tokenizer") or ("byte" if name == "stdlib" else "char"))
    vocab_size = cfg.get("vocab_size")
    try:
        kind = spec_kind(spec, vocab_size, prefix="data.")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    key_parts: dict[str, Any] = {"v": CACHE_VERSION, "d": name, "tok": spec, "val": val_fraction,
                                 "test": test_fraction}
    if kind == "bpe":
        key_parts["vocab"] = int(vocab_size)
    if kind == "hf":
        key_parts["tokfile"] = sources.text_fingerprint(Path(spec).expanduser())
    if name == "stdlib":
        files = sources.stdlib_files(int(cfg.get("max_bytes", 2_000_000)))
        key_parts["src"] = sources.stdlib_fingerprint(files)
        label = "stdlib"
    else:
        if not cfg.get("path"):
            raise DataError("data=text needs data.path=<a UTF-8 text file>")
        path = Path(str(cfg["path"])).expanduser()
        if not path.is_file():
            raise DataError(f"data.path={str(path)!r} is not a readable file")
        key_parts["src"] = sources.text_fingerprint(path)
        label = f"text:{path.name}"
    target = (Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()) \
        / sources.fingerprint(**key_parts)
    if not (target / "meta.json").is_file():  # a miss: read the source (only now) and prepare it
        from apt.data.prepare import prepare

        corpus = StringCorpus(sources.read_stdlib(files), "stdlib") if name == "stdlib" else TextCorpus(
            [path], path, errors="surrogateescape" if kind == "byte" else "strict")
        prepare(corpus, target, spec, vocab_size=vocab_size, val_fraction=val_fraction,
                test_fraction=test_fraction, workers=1, name=label, exist_ok=True)
    splits, tok, _ = open_tokens_dir(target)
    return TokenData(splits["train"], splits["val"], tok, label, target, splits["test"])


def _synthetic(cfg: Mapping[str, Any], val_fraction: float, test_fraction: float) -> TokenData:
    """Small and cheap to regenerate: kept in memory, no cache files."""
    opts = {k: cfg.get(k) if cfg.get(k) is not None else d for k, d in
            (("task", "copy"), ("num_tokens", 20000), ("vocab_size", 16), ("seed", 0), ("period", 8))}
    ids = sources.synthetic_tokens(opts["task"], int(opts["num_tokens"]), int(opts["vocab_size"]),
                                   int(opts["seed"]), int(opts["period"]))
    n_train, n_val, n_test = split_sizes(len(ids), val_fraction, test_fraction)
    return TokenData(ids[:n_train], ids[n_train:n_train + n_val], IdTokenizer(int(opts["vocab_size"])),
                     f"synthetic:{opts['task']}", test=ids[n_train + n_val:] if n_test else None)
