"""Where a run's text comes from: the stdlib's own sources, a local file, or a synthetic task.

Each source returns a *fingerprint* (cheap: names, sizes, mtimes, options) used as the token
cache key, and the text or ids themselves only when the cache misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STDLIB_SKIP_DIRS", "stdlib_files", "synthetic_tokens", "text_fingerprint", "stdlib_fingerprint"]

#: Directories left out of the stdlib corpus: tests (huge, repetitive), vendored or
#: platform-specific trees, and third-party installs.
STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip",
     "tkinter", "turtledemo", "__pycache__", "config-3", "venv"}
)


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_bytes: int) -> list[tuple[Path, int]]:
    """``(path, size)`` of stdlib ``.py`` files in sorted relative-path order, up to ``max_bytes``.

    Sorting makes the corpus identical for a given Python version; the cap keeps the
    default run small on any machine.
    """
    root = stdlib_root()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS and not d.startswith("config-"))
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    out, total = [], 0
    for _, path in found:
        size = path.stat().st_size
        if size == 0:
            continue
        if total + size > max_bytes and out:
            break
        out.append((path, size))
        total += size
    if not out:
        raise FileNotFoundError(f"no .py files found under the standard library at {root}")
    return out


def stdlib_fingerprint(files: list[tuple[Path, int]]) -> str:
    h = hashlib.sha256(f"{sys.version_info[:3]}".encode())
    for path, size in files:
        h.update(f"{path}:{size}:{path.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_stdlib(files: list[tuple[Path, int]]) -> str:
    parts = []
    for path, _ in files:
        parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def text_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def synthetic_tokens(task: str, num_tokens: int, vocab_size: int, seed: int, period: int) -> np.ndarray:
    """A deterministic id stream for fast tests; each task has a known learnable structure.

    - ``cycle``: ``0, 1, ..., period-1, 0, 1, ...`` (ids mod vocab): trivially predictable.
    - ``copy``: random segments of length ``period`` each written twice; the second copy
      is predictable from context, the first is not (loss floor ~ half of uniform).
    - ``markov``: a fixed random first-order chain with two successors per token.
    """
    rng = np.random.default_rng(seed)
    if task == "cycle":
        ids = np.arange(num_tokens) % period % vocab_size
    elif task == "copy":
        n_seg = num_tokens // (2 * period) + 1
        seg = rng.integers(0, vocab_size, size=(n_seg, period))
        ids = np.concatenate([seg, seg], axis=1).reshape(-1)[:num_tokens]
    elif task == "markov":
        succ = rng.integers(0, vocab_size, size=(vocab_size, 2))
        choice = rng.integers(0, 2, size=num_tokens)
        ids = np.empty(num_tokens, dtype=np.int64)
        ids[0] = 0
        for i in range(1, num_tokens):
            ids[i] = succ[ids[i - 1], choice[i]]
    else:
        raise ValueError(f"unknown synthetic task {task!r}; valid: ['copy', 'cycle', 'markov']")
    return ids.astype(np.uint16)


def fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
