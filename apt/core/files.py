"""Writing files the way a crash cannot half-do, with the modes the user's umask asks for.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask, so a file written
through a temporary name is given the mode ``open()`` would have given it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text", "new_file_mode"]


def new_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` creates files with.

    Read from /proc on Linux; elsewhere the umask is set and restored (not thread-safe).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it (``.<name>.<random>.tmp``) that
    replaces it when the block ends without an exception, so a crash leaves the old file,
    never half a new one (and at worst the temporary file). ``mode``: ``"w"`` (text, UTF-8,
    no newline translation) or ``"wb"``; ``fsync``: flush to the disk before the rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600 files whatever the umask
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` atomically (:func:`atomic_open`)."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)
