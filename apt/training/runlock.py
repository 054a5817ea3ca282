"""One writer per run directory: a lock file that records its owner's pid and host.

Two runs writing into one directory lose each other's results (and one's retention deletes
the other's checkpoints), so a run holds ``<dir>/.apt.lock`` while it trains. The file
holds ``{"pid", "host", "started"}`` for the messages; mutual exclusion comes from an
exclusive ``flock`` on it, which the kernel releases when the owner dies however it dies
(``kill -9`` included), so a lock file left behind is recognised as stale without guessing
from pids: its lock is free, and when it names this host it is taken over with a warning.
A lock file from another host whose lock is free (a network file system that does not
share flocks) cannot be checked from here and is refused with the file to delete.

A multirun's launching process holds its sweep directory's lock the same way for the whole
sweep (``RunLock(d, kind="sweep")``), so two sweeps never write into one directory.

No torch here: ``apt check`` and train.py's preflight ask :func:`lock_problem`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "RunDirLocked", "RunLock", "lock_problem"]

log = logging.getLogger(__name__)

#: The lock file's name inside the directory it guards.
LOCK_NAME = ".apt.lock"


class RunDirLocked(RuntimeError):
    """Another live run writes into the directory (the message is one line naming it)."""


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _in_use(directory: Path, record: dict[str, Any], kind: str = "run") -> str:
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(record["started"])) \
        if isinstance(record.get("started"), int | float) else ""
    return (f"the {kind} directory {str(directory)!r} is in use by pid {record.get('pid', '?')} on host "
            f"{record.get('host', '?')}{since}; wait for that {kind} to end, or write this one elsewhere "
            f"(another hydra.{kind}.dir)")


def _foreign(directory: Path, record: dict[str, Any], kind: str = "run") -> str:
    return (f"the {kind} directory {str(directory)!r} is locked by pid {record.get('pid', '?')} on host "
            f"{record.get('host')}, which cannot be checked from {socket.gethostname()}; if that {kind} has "
            f"ended, delete {str(directory / LOCK_NAME)!r}")


class RunLock:
    """Hold ``directory``'s lock: ``with RunLock(d): ...`` or :meth:`acquire` / :meth:`release`.

    ``kind`` names what the directory is for in the messages: ``run`` (``hydra.run.dir``), or
    ``sweep`` for a multirun's ``hydra.sweep.dir``, which its launching process holds for the
    whole sweep (:class:`apt.sweeps.SweepSummaryCallback`).
    """

    def __init__(self, directory: str | Path, *, kind: str = "run") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.kind = kind
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunDirLocked`; a stale one is taken over with a warning."""
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirLocked(_in_use(self.directory, _read(self.path), self.kind)) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the owner released (and removed) it between our open and flock: again
        previous = _read(self.path)
        host = socket.gethostname()
        if previous.get("host") not in (None, host):
            os.close(fd)
            raise RunDirLocked(_foreign(self.directory, previous, self.kind))
        if previous.get("pid") is not None:
            log.warning("took over the stale lock of pid %s in %s: that %s is no longer running",
                        previous["pid"], self.directory, self.kind)
        record = json.dumps({"pid": os.getpid(), "host": host, "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go (the file goes first, so nobody takes over a stale one)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def lock_problem(directory: str | Path) -> str | None:
    """Why a run cannot write into ``directory`` now (another live run holds it), or None.

    Takes and drops a shared lock, so it creates nothing and never waits.
    """
    directory = Path(directory)
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _in_use(directory, _read(path))
    finally:
        os.close(fd)
    record = _read(path)
    if record.get("host") not in (None, socket.gethostname()):
        return _foreign(directory, record)
    return None
