"""Writing files the way a crash cannot half-do, with the modes the user's umask asks for.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask, so a file written
through a temporary name is given the mode ``open()`` would have given it. A write that
fails for want of room (a full disk or quota, a file-size limit) is a :class:`NoSpaceError`
naming the file and the free space, which commands print as their one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["NO_SPACE", "NoSpaceError", "atomic_open", "atomic_write_text", "naming_no_space", "new_file_mode",
           "no_space_cause", "no_space_error", "no_space_line"]

#: ``errno`` values of a write that found no room: disk full, quota exceeded, file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class NoSpaceError(OSError):
    """Writing a file failed for want of room; ``str()`` is one line naming the file and the
    free space on its filesystem (``errno`` is the original one)."""

    def __str__(self) -> str:
        return str(self.args[0])


def no_space_cause(exc: BaseException) -> OSError | None:
    """The no-room :class:`OSError` behind ``exc`` (itself, or a cause or context of it:
    torch wraps the write's OSError in a RuntimeError), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE:
            return current
        current = current.__cause__ or current.__context__
    return None


def no_space_error(path: str | os.PathLike[str] | None, cause: OSError) -> NoSpaceError:
    """The :class:`NoSpaceError` of writing ``path``: the file, the reason, the free space on
    its filesystem and, for ``EFBIG``, the process's file-size limit when one is set.
    ``path`` None (a write whose file is not known): the current directory's filesystem."""
    where = Path(path).absolute() if path is not None else None
    probe = where.parent if where is not None else Path.cwd()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    whose = "its" if where is not None else "the working directory's"
    try:
        free = f"{_size(shutil.disk_usage(probe).free)} free on {whose} filesystem"
    except OSError:
        free = "free space unknown"
    limit = ""
    if cause.errno == errno.EFBIG:
        with contextlib.suppress(ImportError, OSError, ValueError):
            import resource

            soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if soft != resource.RLIM_INFINITY:
                limit = f"; this process may write files of at most {_size(soft)} (ulimit -f)"
    what = f"cannot write {where}" if where is not None else "a write failed"
    err = NoSpaceError(f"{what}: {cause.strerror or cause} ({free}{limit})")
    err.errno = cause.errno
    return err


def no_space_line(exc: BaseException) -> str | None:
    """The one line (without ``error:``) of a failure for want of room behind ``exc``, else None."""
    cause = no_space_cause(exc)
    if cause is None:
        return None
    return str(exc if isinstance(exc, NoSpaceError) else no_space_error(cause.filename, cause))


@contextlib.contextmanager
def naming_no_space(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within: a write that finds no room raises :class:`NoSpaceError` naming ``path`` (a
    plain ``write()`` error names no file)."""
    try:
        yield
    except Exception as exc:
        cause = no_space_cause(exc)
        if cause is None or isinstance(exc, NoSpaceError):
            raise
        raise no_space_error(path, cause) from None


def _size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``, ``262144`` -> ``256 KiB``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.1f}".removesuffix(".0") + f" {units[i]}"


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
    A write that finds no room raises :class:`NoSpaceError` naming ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with naming_no_space(path):
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
