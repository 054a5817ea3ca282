"""Build a run's token streams once, cache them on disk, and memory-map them.

Tokenising is done once per (source, tokenizer, split) and written as raw ``uint16`` files;
later runs (and every job of a multirun) map those files instead of re-reading the corpus,
so start-up stays fast and memory is shared between processes through the page cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apt.data import sources
from apt.data.tokenizers import IdTokenizer, Tokenizer, build_tokenizer, tokenizer_from_dict

__all__ = ["DATASETS", "CACHE_VERSION", "TokenData", "default_cache_dir", "load_dataset", "split_ids"]

DATASETS = ("stdlib", "text", "synthetic")
CACHE_VERSION = 1


@dataclass
class TokenData:
    """Train/val/test token ids (1-D, usually read-only memmaps) and the tokenizer that made them.

    ``test`` is None unless ``data.test_fraction`` > 0 (see :func:`split_ids`).
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    name: str
    cache_dir: Path | None = None
    test: np.ndarray | None = None

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


def split_ids(ids: np.ndarray, val_fraction: float, test_fraction: float = 0.0) -> tuple[np.ndarray, ...]:
    """``(train, val, test)`` of a stream of N ids; ``test`` is None when ``test_fraction`` is 0.

    test = the last ``int(N * test_fraction)`` ids, val = the ``max(1, int(N * val_fraction))``
    ids just before them, train = the rest. Carving the test split from the end leaves the
    val split of ``test_fraction=0`` unchanged.
    """
    n = len(ids)
    n_val, n_test = max(1, int(n * val_fraction)), int(n * test_fraction)
    if test_fraction > 0 and n_test == 0:
        raise ValueError(f"data.test_fraction={test_fraction} of {n:,} tokens is an empty test split")
    end = n - n_test
    return ids[:end - n_val], ids[end - n_val:end], (ids[end:] if test_fraction > 0 else None)


def load_dataset(cfg: Mapping[str, Any]) -> TokenData:
    """Tokens for the ``data`` config group (``name`` is one of :data:`DATASETS`)."""
    name = cfg.get("name")
    val_fraction = float(cfg.get("val_fraction", 0.1))
    test_fraction = float(cfg.get("test_fraction", 0.0))
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, "
                         f"got test_fraction={test_fraction}, val_fraction={val_fraction}")
    fractions = (val_fraction, test_fraction)
    cache_root = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    if name == "stdlib":
        files = sources.stdlib_files(int(cfg.get("max_bytes", 2_000_000)))
        tok = cfg.get("tokenizer", "byte")
        key = sources.fingerprint(v=CACHE_VERSION, d=name, src=sources.stdlib_fingerprint(files),
                                  tok=tok, val=val_fraction, test=test_fraction)
        return _cached(cache_root, key, name, lambda: _from_text(sources.read_stdlib(files), tok, *fractions))
    if name == "text":
        if not cfg.get("path"):
            raise ValueError("data=text needs data.path=<a UTF-8 text file>")
        path = Path(str(cfg["path"])).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data.path={str(path)!r} is not a readable file")
        tok = cfg.get("tokenizer", "char")
        key = sources.fingerprint(v=CACHE_VERSION, d=name, src=sources.text_fingerprint(path),
                                  tok=tok, val=val_fraction, test=test_fraction)
        return _cached(cache_root, key, f"text:{path.name}",
                       lambda: _from_text(path.read_text(encoding="utf-8"), tok, *fractions))
    if name == "synthetic":
        opts = {k: cfg.get(k, d) for k, d in
                (("task", "copy"), ("num_tokens", 20000), ("vocab_size", 16), ("seed", 0), ("period", 8))}
        ids = sources.synthetic_tokens(opts["task"], int(opts["num_tokens"]), int(opts["vocab_size"]),
                                       int(opts["seed"]), int(opts["period"]))
        train, val, test = split_ids(ids, *fractions)
        # Small and cheap to regenerate: kept in memory, no cache files.
        return TokenData(train, val, IdTokenizer(int(opts["vocab_size"])), f"synthetic:{opts['task']}",
                         test=test)
    raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")


def _from_text(text: str, tokenizer: str, val_fraction: float,
               test_fraction: float) -> tuple[dict[str, np.ndarray | None], Tokenizer]:
    tok = build_tokenizer(tokenizer, text)
    train, val, test = split_ids(tok.encode(text), val_fraction, test_fraction)
    return {"train": train, "val": val, "test": test}, tok


def _cached(root: Path, key: str, name: str, build) -> TokenData:
    """Map ``root/key`` if complete, else build it in a temp dir and rename it into place."""
    target = root / key
    meta_path = target / "meta.json"
    if not meta_path.is_file():
        splits, tok = build()
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            dtype = "uint16" if tok.vocab_size <= 65536 else "uint32"
            for split, ids in splits.items():
                if ids is not None:
                    np.asarray(ids, dtype=dtype).tofile(tmp / f"{split}.bin")
            meta = {"name": name, "dtype": dtype, "tokenizer": tok.to_dict(), "version": CACHE_VERSION}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            try:
                tmp.rename(target)  # atomic: a reader sees all files or none
            except OSError:  # another process won the race; use its copy
                pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tok = tokenizer_from_dict(meta["tokenizer"])
    train, val = (np.memmap(target / f"{s}.bin", dtype=meta["dtype"], mode="r") for s in ("train", "val"))
    test_path = target / "test.bin"
    test = np.memmap(test_path, dtype=meta["dtype"], mode="r") if test_path.is_file() else None
    return TokenData(train, val, tok, meta["name"], target, test)
