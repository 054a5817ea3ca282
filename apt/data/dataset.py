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
from apt.data.tokenizers import (
    ByteTokenizer,
    IdTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

__all__ = ["DATASETS", "CACHE_VERSION", "TokenData", "default_cache_dir", "load_dataset"]

DATASETS = ("stdlib", "text", "synthetic")
CACHE_VERSION = 1


@dataclass
class TokenData:
    """Train/val token ids (1-D, usually read-only memmaps) and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    name: str
    cache_dir: Path | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} val tokens, "
                f"vocab {self.vocab_size} ({self.tokenizer.kind})")


def default_cache_dir() -> Path:
    """``$APT_CACHE_DIR`` or ``~/.cache/apt/tokens``."""
    env = os.environ.get("APT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "apt" / "tokens"


def load_dataset(cfg: Mapping[str, Any]) -> TokenData:
    """Tokens for the ``data`` config group (``name`` is one of :data:`DATASETS`)."""
    name = cfg.get("name")
    val_fraction = float(cfg.get("val_fraction", 0.1))
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    cache_root = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    if name == "stdlib":
        files = sources.stdlib_files(int(cfg.get("max_bytes", 2_000_000)))
        tok = cfg.get("tokenizer", "byte")
        key = sources.fingerprint(v=CACHE_VERSION, d=name, src=sources.stdlib_fingerprint(files),
                                  tok=tok, val=val_fraction)
        return _cached(cache_root, key, name, lambda: _from_text(sources.read_stdlib(files), tok, val_fraction))
    if name == "text":
        if not cfg.get("path"):
            raise ValueError("data=text needs data.path=<a UTF-8 text file>")
        path = Path(str(cfg["path"])).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data.path={str(path)!r} is not a readable file")
        tok = cfg.get("tokenizer", "char")
        key = sources.fingerprint(v=CACHE_VERSION, d=name, src=sources.text_fingerprint(path),
                                  tok=tok, val=val_fraction)
        if tok == "byte":  # any file: its bytes are the tokens, no decoding
            return _cached(cache_root, key, f"text:{path.name}", lambda: _from_bytes(path.read_bytes(), val_fraction))
        return _cached(cache_root, key, f"text:{path.name}",
                       lambda: _from_text(path.read_text(encoding="utf-8"), tok, val_fraction))
    if name == "synthetic":
        opts = {k: cfg.get(k, d) for k, d in
                (("task", "copy"), ("num_tokens", 20000), ("vocab_size", 16), ("seed", 0), ("period", 8))}
        ids = sources.synthetic_tokens(opts["task"], int(opts["num_tokens"]), int(opts["vocab_size"]),
                                       int(opts["seed"]), int(opts["period"]))
        n_val = max(1, int(len(ids) * val_fraction))
        # Small and cheap to regenerate: kept in memory, no cache files.
        return TokenData(ids[:-n_val], ids[-n_val:], IdTokenizer(int(opts["vocab_size"])),
                         f"synthetic:{opts['task']}")
    raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")


def _from_text(text: str, tokenizer: str, val_fraction: float) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
    tok = build_tokenizer(tokenizer, text)
    ids = tok.encode(text)
    n_val = max(1, int(len(ids) * val_fraction))
    return ids[:-n_val], ids[-n_val:], tok


def _from_bytes(data: bytes, val_fraction: float) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
    """Byte-level ids of raw ``data``: for UTF-8 text the same ids ``ByteTokenizer.encode`` gives."""
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)
    n_val = max(1, int(len(ids) * val_fraction))
    return ids[:-n_val], ids[-n_val:], ByteTokenizer()


def _cached(root: Path, key: str, name: str, build) -> TokenData:
    """Map ``root/key`` if complete, else build it in a temp dir and rename it into place."""
    target = root / key
    meta_path = target / "meta.json"
    if not meta_path.is_file():
        train, val, tok = build()
        if len(train) == 0 or len(val) == 0:  # e.g. a one-character file: never cache it
            raise ValueError(f"{name}: {len(train)} train / {len(val)} val tokens; nothing to train on")
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            dtype = "uint16" if tok.vocab_size <= 65536 else "uint32"
            np.asarray(train, dtype=dtype).tofile(tmp / "train.bin")
            np.asarray(val, dtype=dtype).tofile(tmp / "val.bin")
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
    train = np.memmap(target / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(target / "val.bin", dtype=meta["dtype"], mode="r")
    return TokenData(train, val, tok, meta["name"], target)
