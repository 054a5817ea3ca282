"""What makes a file an APT checkpoint, answerable without torch and without loading weights.

APT writes checkpoints with ``torch.save``: a zip archive whose ``<name>/data.pkl`` pickles
a dict whose first entry is ``"format": FORMAT``. :func:`checkpoint_problem` reads only the
zip directory and the first opcodes of that pickle (nothing is unpickled), so the config
check can refuse a text file, another program's archive or a truncated download in
milliseconds, before a run starts, with a message that does not suggest
``weights_only=False``. :func:`saved_config` reads the run config a checkpoint was saved
with the same way, without torch: the pickle is read with every class and tensor replaced by
an inert stand-in, so nothing named in the file is imported or called.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "checkpoint_problem", "saved_config"]

#: The value of a checkpoint's ``format`` entry.
FORMAT = "apt-checkpoint"

_HEAD = 4096  # bytes of data.pkl read: the format entry is the first thing in it


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a readable APT checkpoint, or None when its header says it is."""
    path = Path(path)
    shown = repr(str(path))
    if not path.is_file():
        return f"{shown} does not exist" if not path.exists() else f"{shown} is not a file"
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                return f"{shown} is not an APT checkpoint: a zip archive without data.pkl"
            with zf.open(pickles[0]) as fh:
                head = fh.read(_HEAD)
    except zipfile.BadZipFile:
        return (f"{shown} is not an APT checkpoint: not a torch.save archive (corrupt or truncated, "
                "or another kind of file)")
    except OSError as exc:
        return f"{shown} cannot be read: {exc.strerror or exc}"
    strings = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
                if len(strings) == 2:
                    break
    except ValueError:  # the head ends mid-opcode; what was read is what counts
        pass
    if strings != ["format", FORMAT]:
        return f"{shown} is not an APT checkpoint: a torch file without a format={FORMAT!r} entry"
    return None


def saved_config(path: str | Path) -> dict[str, Any] | None:
    """The resolved run config saved in APT checkpoint ``path`` (its ``config`` entry), or None
    when the file holds none or cannot be read (:func:`checkpoint_problem` says why)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with zf.open(name) as fh:
                state = _InertUnpickler(fh).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, IndexError, KeyError):
        return None
    config = state.get("config") if isinstance(state, dict) else None
    return config if isinstance(config, dict) else None


class _Inert:
    """What every class, function and tensor in a checkpoint's pickle reads as here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    """Plain containers come back as they are; anything else (tensors, storages, torch's
    rebuild functions, ``OrderedDict``) as an :class:`_Inert` that was never imported."""

    def find_class(self, module: str, name: str) -> Any:
        return _Inert()

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()
