"""Writing files the way a crash cannot half-do, with the modes the user's umask asks for.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask, so a file written
through a temporary name is given the mode ``open()`` would have given it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "new_file_mode"]


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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` atomically: a crash leaves the old file, never half a new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
