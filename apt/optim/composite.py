"""Several torch optimizers that act as one, so the trainer and plugins see a single optimizer.

Muon (:class:`torch.optim.Muon`) orthogonalises the update of a whole 2-D matrix and refuses
anything else; embeddings, the head and the gains want AdamW (modded-nanogpt trains the
hidden matrices with Muon and the rest with Adam). Rather than teach the trainer, the LR
schedule, checkpoints and plugins about lists of optimizers, :class:`CompositeOptimizer`
holds one optimizer per *part* and offers what they use of one optimizer:

- ``param_groups``: every part's groups, in part order (the same dicts, so the LR schedule
  scales each group's own ``initial_lr``; a Muon group keeps its own peak lr);
- ``step``, ``zero_grad``: each part in turn;
- ``state_dict`` / ``load_state_dict``: ``{"parts": {name: that optimizer's state dict}}``;
  loading refuses a state with other parts (a resumed run must split parameters the same way);
- ``add_param_group``: routes each new parameter to the part ``route`` names (the same rule
  that split the model's parameters at the start), so MoE upcycling and plugins that add
  parameters mid-run need not know there are several optimizers;
- ``state``: a read-only view of every part's per-parameter state.

``optimizers`` (name -> optimizer) and :meth:`route` are there for code that moves state
between parameters (:func:`apt.moe.add_upcycled_params`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["CompositeOptimizer"]


class CompositeOptimizer:
    """One optimizer per part (name -> optimizer, in order); ``route(param)`` names a parameter's part."""

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer],
                 route: Callable[[torch.Tensor], str]) -> None:
        if not optimizers:
            raise ValueError("CompositeOptimizer needs at least one optimizer")
        self.optimizers = dict(optimizers)
        self._route = route

    def route(self, param: torch.Tensor) -> str:
        """The name of the part that takes ``param``."""
        name = self._route(param)
        if name not in self.optimizers:
            raise ValueError(f"route sent a parameter to {name!r}; parts: {list(self.optimizers)}")
        return name

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def state(self) -> Mapping[torch.Tensor, Any]:
        merged: dict[torch.Tensor, Any] = {}
        for opt in self.optimizers.values():
            merged.update(opt.state)
        return MappingProxyType(merged)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step every part; a ``closure`` is evaluated once, before the parts step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add ``param_group``'s parameters, each to the part that takes it, with the group's options.

        Options the group leaves out come from each part's own defaults (its configured lr).
        """
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        by_part: dict[str, list[torch.Tensor]] = {}
        for p in params:
            by_part.setdefault(self.route(p), []).append(p)
        options = {k: v for k, v in param_group.items() if k != "params"}
        for name, ps in by_part.items():
            self.optimizers[name].add_param_group({**options, "params": ps})

    def state_dict(self) -> dict[str, Any]:
        return {"parts": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        parts = state_dict.get("parts") if isinstance(state_dict, Mapping) else None
        if not isinstance(parts, Mapping) or list(parts) != list(self.optimizers):
            saved = list(parts) if isinstance(parts, Mapping) else "a single optimizer"
            raise ValueError(f"optimizer state has parts {saved}, this run's optimizer has parts "
                             f"{list(self.optimizers)}: resume with the optim config the run was saved with")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(parts[name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={type(opt).__name__}({sum(len(g['params']) for g in opt.param_groups)} "
                          "params)" for name, opt in self.optimizers.items())
        return f"CompositeOptimizer({inner})"
