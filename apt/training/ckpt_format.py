"""What makes a file an APT checkpoint, answerable without torch and without loading weights.

APT writes checkpoints with ``torch.save``: a zip archive whose ``<name>/data.pkl`` pickles
a dict whose first entry is ``"format": FORMAT``. :func:`checkpoint_problem` reads only the
zip directory and the first opcodes of that pickle (nothing is unpickled), so the config
check can refuse a text file, another program's archive or a truncated download in
milliseconds, before a run starts, with a message that does not suggest
``weights_only=False``.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

__all__ = ["FORMAT", "checkpoint_problem"]

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
