"""What a layer reports besides its output: auxiliary losses, and parameters it may leave unused.

This is the whole interface between layers with side objectives (a mixture of experts'
router losses, say) and the training loop; the loop and the distributed wrappers use it
without knowing which layers are present.

Auxiliary losses. A layer calls :func:`add_aux_loss` in its forward; whoever runs the
forward inside :func:`collect_aux_losses` receives every loss added during that forward,
summed by name::

    with collect_aux_losses() as aux:
        logits, loss = model(x, y)
    total = loss + sum(aux.values())

A forward outside any collection (evaluation, sampling, an EMA teacher's forward) drops
the losses. Nothing is cached and nothing is looked up in the model, so a layer swapped in
mid-run (MoE upcycling) is counted from its first forward, and a layer that did not run
adds nothing. Collections nest; a loss goes to the innermost one. ``torch.compile`` traces
through this without graph breaks.

Unused parameters. A layer class that can leave some of its parameters without a
gradient in a step (an expert that no token chose) sets ``may_leave_parameters_unused =
True``; data-parallel training asks :func:`has_unused_parameters` whether DDP must look
for such parameters after each forward.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["add_aux_loss", "collect_aux_losses", "has_unused_parameters"]

_active: list[dict[str, Any]] = []  # innermost collection last


def add_aux_loss(name: str, value: torch.Tensor) -> None:
    """Add the scalar ``value`` to the loss named ``name`` of the current collection, if any."""
    if _active:
        losses = _active[-1]
        losses[name] = losses[name] + value if name in losses else value


@contextlib.contextmanager
def collect_aux_losses() -> Iterator[dict[str, torch.Tensor]]:
    """Collect the losses layers add while the block runs: ``name -> summed scalar tensor``."""
    losses: dict[str, Any] = {}
    _active.append(losses)
    try:
        yield losses
    finally:
        _active.pop()


def has_unused_parameters(model: nn.Module) -> bool:
    """Whether some layer of ``model`` may leave parameters without a gradient in a step."""
    return any(getattr(m, "may_leave_parameters_unused", False) for m in model.modules())
