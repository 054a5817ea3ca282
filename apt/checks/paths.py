"""Paths and devices a run will use, checked up front instead of at the first save.

- the run directory and the checkpoint directory can be created and written, and no other
  live run writes into them (their lock, :mod:`apt.training.runlock`);
- a fresh start does not land in a checkpoint directory that holds another run's
  checkpoints (retention would delete them, resume would mix them up);
- ``ckpt_path`` is an APT checkpoint (a header check: no weights are loaded) of the model
  this run builds (the model config saved in it, read without torch);
- the requested device exists on this machine, decided without importing torch (the
  build step asks torch again and gives the same message if this guess was wrong).
"""

from __future__ import annotations

import glob
import os
import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["DEVICE_RE", "SHAPE_KEYS", "checkpoint_path_problem", "device_problem", "existing_checkpoints_problem",
           "on_host", "writable_dir_problem"]

#: The device strings ``trainer.device`` accepts.
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: The ``model`` keys that decide a model's weights (``dropout`` does not).
SHAPE_KEYS = ("d_model", "num_heads", "num_layers", "d_ff", "norm", "position", "rope_base", "bias", "max_seq_len")


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


def checkpoint_path_problem(ckpt_path: str, model: Mapping[str, Any] | None = None,
                            block_size: int | None = None) -> str | None:
    """``ckpt_path=...`` problems: empty, missing, not an APT checkpoint by its header, or
    (given the run's ``model`` section and ``data.block_size``) a checkpoint of another model."""
    from apt.training.ckpt_format import checkpoint_problem, saved_config

    if not str(ckpt_path).strip():
        return "ckpt_path is empty; give a checkpoint file (ckpt_path=<dir>/step-NNNNNNNN.pt) or leave it null"
    problem = checkpoint_problem(ckpt_path)
    if problem is not None:
        return f"ckpt_path={problem}"
    saved = saved_config(ckpt_path)
    if model is None or saved is None or not isinstance(saved.get("model"), Mapping):
        return None
    theirs = _shape(saved["model"], (saved.get("data") or {}).get("block_size"))
    ours = _shape(model, block_size)
    differ = [k for k in SHAPE_KEYS if k in theirs and k in ours and theirs[k] != ours[k]]
    if not differ:
        return None
    shown = ", ".join(f"model.{k}={theirs[k]} (this run: {ours[k]})" for k in differ)
    return (f"ckpt_path={str(ckpt_path)!r} holds another model: {shown}; a run started from a checkpoint "
            "continues its model: set the same model options")


def _shape(model: Mapping[str, Any], block_size: Any) -> dict[str, Any]:
    """``model``'s :data:`SHAPE_KEYS` with the defaults filled in as the builder fills them."""
    out = {k: model[k] for k in SHAPE_KEYS if k in model}
    if out.get("d_ff") is None and isinstance(out.get("d_model"), int):
        out["d_ff"] = 4 * out["d_model"]
    if out.get("max_seq_len") is None:
        out["max_seq_len"] = block_size
    return out


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


def on_host(device: str) -> bool:
    """Whether ``trainer.device`` puts the model in host memory (the CPU, or Apple's unified
    memory): ``auto`` does where CUDA cannot be used."""
    return device in ("cpu", "mps") or (device == "auto" and _no_cuda() is not None)


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
