"""Paths and devices a run will use, checked up front instead of at the first save.

- the run directory and the checkpoint directory can be created and written, and no other
  live run writes into them (their lock, :mod:`apt.training.runlock`);
- a fresh start does not land in a checkpoint directory that holds another run's
  checkpoints (retention would delete them, resume would mix them up);
- ``ckpt_path`` is an APT checkpoint (a header check: no weights are loaded);
- the requested device exists on this machine, decided without importing torch (the
  build step asks torch again and gives the same message if this guess was wrong).
"""

from __future__ import annotations

import glob
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["DEVICE_RE", "checkpoint_path_problem", "device_problem", "existing_checkpoints_problem",
           "writable_dir_problem"]

#: The device strings ``trainer.device`` accepts.
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def writable_dir_problem(path: str | Path, what: str) -> str | None:
    """Why directory ``path`` cannot be created or written (``what`` names it), or None."""
    p = Path(path).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            return f"{what} {str(p)!r} exists and is not a directory"
        if not os.access(p, os.W_OK | os.X_OK):
            return f"{what} {str(p)!r} is not writable"
        return None
    ancestor = next(a for a in p.parents if a.exists())
    if not ancestor.is_dir():
        return f"{what} {str(p)!r} cannot be created: {str(ancestor)!r} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{what} {str(p)!r} cannot be created: {str(ancestor)!r} is not writable"
    return None


def existing_checkpoints_problem(directory: str | Path) -> str | None:
    """Why a run that does not resume cannot start with ``directory`` as its checkpoint directory."""
    p = Path(directory)
    names = sorted(c.name for c in p.glob("step-*.pt")) if p.is_dir() else []
    if not names:
        return None
    return (f"the checkpoint directory {str(p)!r} already holds checkpoints ({names[-1]}"
            f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}); continue that run with "
            "trainer.resume=true, or start this one in another hydra.run.dir (or trainer.checkpoint_dir)")


def checkpoint_path_problem(ckpt_path: str) -> str | None:
    """``ckpt_path=...`` problems: missing, or not an APT checkpoint by its header."""
    from apt.training.ckpt_format import checkpoint_problem

    problem = checkpoint_problem(ckpt_path)
    return f"ckpt_path={problem}" if problem is not None else None


def device_problem(device: str) -> str | None:
    """Why ``trainer.device`` cannot be used here, or None."""
    if not DEVICE_RE.fullmatch(str(device)):
        return f"trainer.device={device!r} is not one of auto, cpu, cuda, cuda:N, mps"
    if str(device).startswith("cuda"):
        why = _no_cuda()
        if why:
            return f"trainer.device={device} but CUDA is not available ({why}); use trainer.device=cpu or auto"
    if device == "mps" and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        return "trainer.device=mps but MPS is not available (it needs an Apple-silicon Mac); " \
               "use trainer.device=cpu or auto"
    return None


def _no_cuda() -> str | None:
    """Why CUDA cannot be used, or None when it may be (torch has the final word at build)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "torch is not installed"
    if "+cpu" in version:
        return f"the installed torch {version} is a CPU-only build"
    if sys.platform == "darwin":
        return "macOS has no CUDA"
    if sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA GPU on this machine"
    return None
