"""A model's memory, estimated from its config before anything is allocated.

``model.d_model=65536`` used to reach torch's allocator, which failed with a traceback after
the run directory existed. The estimate here is a lower bound: the parameters of the
attention and FFN matrices, the embeddings and learned positions (fp32, 4 bytes each), as
many bytes again for their gradients, and the optimizer's state (AdamW: two fp32 slots).
Activations, the data and the framework are not counted, so a model refused here cannot fit.
It is compared with the memory available: on the host (``MemAvailable`` of /proc/meminfo,
within the cgroup's limit), read without torch by the config check; on a GPU (its free
memory, torch's ``mem_get_info``) by the build step, which has torch imported already.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["GIB", "available_host_memory", "known_vocab_size", "memory_problem", "parameter_estimate"]

GIB = 1 << 30
#: fp32 slots of optimizer state per parameter, by optimizer class (others: none counted).
STATE_SLOTS = {"Adam": 2, "AdamW": 2, "NAdam": 2, "RAdam": 2, "Adamax": 2, "Muon": 1, "Adagrad": 1,
               "RMSprop": 1, "Adadelta": 2}


def parameter_estimate(model: Mapping[str, Any], vocab_size: int | None) -> int:
    """At least this many parameters: per layer the four attention projections (4 d^2) and
    the two FFN matrices (2 d d_ff), the token embedding and learned positions."""
    d, layers = int(model["d_model"]), int(model["num_layers"])
    d_ff = int(model.get("d_ff") or 4 * d)
    positions = int(model.get("max_seq_len") or 0) if model.get("position", "learned") == "learned" else 0
    return layers * (4 * d * d + 2 * d * d_ff) + (int(vocab_size or 0) + positions) * d


def memory_problem(model: Mapping[str, Any], optim: Mapping[str, Any], vocab_size: int | None,
                   available: int, where: str) -> str | None:
    """Why the model cannot fit in ``available`` bytes (``where`` says whose), or None."""
    n = parameter_estimate(model, vocab_size)
    name, slots = _optimizer_state(optim)
    per_param = 4 + 4 + 4 * slots
    copies = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if where.startswith("host") else 1
    need = n * per_param * copies
    if need <= available:
        return None
    state = f"the {name} state" if slots else f"no {name} state"
    procs = f" x {copies} processes" if copies > 1 else ""
    d_ff = model.get("d_ff") or 4 * int(model["d_model"])
    return (f"the model needs at least {need / GIB:,.1f} GiB: {n / 1e9:.2f}B parameters, their gradients and {state} "
            f"({per_param} bytes per parameter{procs}; activations not counted), but {available / GIB:,.1f} GiB "
            f"of memory is available ({where}); choose a smaller model (model.d_model={model['d_model']}, "
            f"model.num_layers={model['num_layers']}, model.d_ff={d_ff})")


def available_host_memory() -> tuple[int, str] | None:
    """``(bytes, where)``: memory this process can still allocate on the host, without torch;
    None where the system does not say."""
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "host, MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host, free pages"))
        except (AttributeError, OSError, ValueError):
            pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text(encoding="ascii").strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text(encoding="ascii").strip())
            found.append((max(0, int(limit) - used), "host, this cgroup's memory.max less memory.current"))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def known_vocab_size(d: Mapping[str, Any]) -> int | None:
    """The vocabulary size where the config tells it without tokenising (a lower bound is
    enough here: None counts no embedding)."""
    if d.get("name") == "synthetic":
        return d.get("vocab_size") if isinstance(d.get("vocab_size"), int) else None
    if d.get("name") in ("text", "stdlib") and d.get("tokenizer") == "byte":
        return 256
    return None


def _optimizer_state(optim: Mapping[str, Any]) -> tuple[str, int]:
    """The optimizer's class name and its fp32 state slots per parameter (the fewest over
    ``optim.parts``: a lower bound)."""
    nodes = [optim.get("optimizer")] + [p.get("optimizer") for p in (optim.get("parts") or {}).values()
                                        if isinstance(p, Mapping)]
    named = []
    for node in nodes:
        target = node.get("_target_") if isinstance(node, Mapping) else None
        if not isinstance(target, str):
            continue
        short = target.replace(":", ".").rpartition(".")[2]
        slots = STATE_SLOTS.get(short, 0)
        if short == "SGD":
            slots = 1 if node.get("momentum") else 0
        named.append((slots, short))
    if not named:
        return "optimizer", 0
    slots, short = min(named)
    return short, slots
