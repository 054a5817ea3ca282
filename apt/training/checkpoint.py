"""Checkpoint files: atomic writes, last-N retention, safe and explicit loading.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code.
Files are written to a temporary name in the same directory and renamed into place, so a
crash mid-write leaves the previous checkpoint intact and never a half-written one under a
final name (the temporary file of a killed save is an orphan that
:meth:`CheckpointManager.remove_orphans` deletes when the next run starts). Files get the
modes the umask gives new files, as ``open()`` would.

Retention and resume never lose the last good state: the checkpoint just written is never
pruned, and an unreadable checkpoint is renamed aside (``<name>.corrupt``, with a warning)
instead of being counted, retried or silently replaced by a fresh start.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apt.core.files import atomic_open
from apt.training.ckpt_format import FORMAT, checkpoint_problem

__all__ = ["CheckpointError", "CheckpointManager", "capture_rng", "load_checkpoint", "restore_rng",
           "save_checkpoint"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d+)\.pt$")
_ORPHAN = re.compile(r"^\.[^/]+\.pt\.[^.]+\.tmp$")  # save_checkpoint's temporary names: .<name>.<random>.tmp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (missing, truncated, corrupt or not APT's)."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", fsync=True) as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an APT checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure mode means "unreadable file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in reason or "Weights only" in reason:  # torch's advice to unpickle anything
            reason = "it holds objects other than tensors and plain data"
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated ({reason[:200]})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an APT checkpoint (no format={FORMAT!r})")
    return state


class CheckpointManager:
    """``<dir>/step-<step>.pt`` files, newest ``keep_last`` kept (never the one just written)."""

    def __init__(self, directory: str | Path, keep_last: int = 2) -> None:
        self.directory = Path(directory)
        self.keep_last = max(1, int(keep_last))

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{int(step):08d}.pt"

    def checkpoints(self) -> list[Path]:
        """Existing checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Write the checkpoint of ``step``, then prune the others to ``keep_last`` in all.

        The file just written is kept whatever the step numbers of the others: it is the
        newest valid state of the run writing now.
        """
        state = {"format": FORMAT, **state}
        path = save_checkpoint(state, self.path_for(step))
        others = [p for p in self.checkpoints() if p != path]
        for old in others[:max(0, len(others) - (self.keep_last - 1))]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint, or None when the directory holds none.

        An unreadable one is renamed to ``<name>.corrupt`` with a warning and the previous
        one is tried. When there were checkpoints and none could be read, that is a
        :class:`CheckpointError` naming them: starting over would overwrite the run.
        """
        aside: list[Path] = []
        for path in reversed(self.checkpoints()):
            try:
                return path, load_checkpoint(path, map_location)
            except CheckpointError as exc:
                moved = path.with_name(path.name + ".corrupt")
                os.replace(path, moved)
                aside.append(moved)
                log.warning("%s; renamed it to %s and trying the previous checkpoint", exc, moved.name)
        if aside:
            names = ", ".join(p.name.removesuffix(".corrupt") for p in reversed(aside))
            raise CheckpointError(
                f"no readable checkpoint in {str(self.directory)!r}: {names} could not be read and were "
                "renamed to *.corrupt; run the same command again to start this run over from step 0")
        return None

    def remove_orphans(self) -> list[Path]:
        """Delete temporary files of saves that were killed mid-write; returns them.

        Only the run holding the directory's lock may call this (another writer's save
        in progress looks the same).
        """
        if not self.directory.is_dir():
            return []
        orphans = sorted(p for p in self.directory.iterdir() if _ORPHAN.match(p.name) and p.is_file())
        for p in orphans:
            p.unlink(missing_ok=True)
            log.info("removed %s, left by a save that did not finish", p)
        return orphans


def capture_rng() -> dict[str, Any]:
    """Every RNG state as checkpoint-safe values (tensors, lists, tuples of ints)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain_num, np_state[2:])]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain_num(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list | tuple) else v
