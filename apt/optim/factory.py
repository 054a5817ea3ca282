"""The run's optimizer from ``optim``: one torch optimizer, or one per part behind a composite.

Without ``optim.parts`` this is what APT always built: ``optim.optimizer`` (a ``_partial_``
target) called with two groups, matrices with ``optim.weight_decay`` and vectors without.
With parts, each parameter goes to the first part whose selector takes it
(:mod:`apt.optim.select`), the rest to ``optim.optimizer``, and each optimizer gets the same
two-group split with its own weight decay::

    optim:
      optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 3e-3}   # the rest
      parts:
        hidden:                                   # a part's name: yours to choose
          params: hidden_matrices                 # a selector of apt.optim.select
          optimizer: {_target_: torch.optim.Muon, _partial_: true, lr: 0.02}
          weight_decay: 0.0                       # null: optim.weight_decay

:func:`add_params` gives parameters created mid-run to the optimizer by the same rules; the
trainer's ``add_param_group`` calls it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from apt.core.errors import ConfigProblems
from apt.optim.composite import CompositeOptimizer
from apt.optim.select import DEFAULT_PART, selects
from apt.training.lr import split_decay

__all__ = ["ParamRouter", "add_params", "build_optimizer"]

log = logging.getLogger(__name__)


class ParamRouter:
    """Names the part a parameter of ``model`` belongs to: the first whose selector takes it.

    Parameters are looked up in the model when asked, so parameters the model gained
    mid-run (MoE experts and routers) are routed by the same rule as the original ones.
    """

    def __init__(self, model: torch.nn.Module, selectors: Mapping[str, str]) -> None:
        self.model = model
        self.selectors = dict(selectors)

    def __call__(self, param: torch.Tensor) -> str:
        return self.assign([param])[0]

    def assign(self, params: Iterable[torch.Tensor]) -> list[str]:
        """The part of each of ``params``, in order (one pass over the model's names)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        embeddings = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}
        out = []
        for p in params:
            if id(p) not in names:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} is not in the model; add it to the "
                                 "model before giving it to the optimizer (parts are chosen by its name)")
            out.append(next((part for part, sel in self.selectors.items()
                             if selects(sel, names[id(p)], p.ndim, embedding=id(p) in embeddings)), DEFAULT_PART))
        return out


def build_optimizer(o_cfg: Mapping[str, Any], model: torch.nn.Module, *, device: str) -> Any:
    """A torch optimizer for ``model`` (no parts), or a :class:`CompositeOptimizer` (parts)."""
    parts_cfg = dict(o_cfg.get("parts") or {})
    params = [p for p in model.parameters() if p.requires_grad]
    if not parts_cfg:
        return _make(o_cfg["optimizer"], params, o_cfg["weight_decay"], o_cfg.get("fused"), device,
                     where="optim.optimizer")
    route = ParamRouter(model, {name: part["params"] for name, part in parts_cfg.items()})
    taken: dict[str, list[torch.Tensor]] = {DEFAULT_PART: [], **{name: [] for name in parts_cfg}}
    for p, part in zip(params, route.assign(params), strict=True):
        taken[part].append(p)
    problems = [f"optim.parts.{name}: params={part['params']} takes no parameter of this model"
                for name, part in parts_cfg.items() if not taken[name]]
    if not taken[DEFAULT_PART]:
        problems.append("optim.optimizer: optim.parts take every parameter and leave none for it; "
                        "drop the last part and let optim.optimizer take those")
    if problems:
        raise ConfigProblems(problems)
    optimizers = {DEFAULT_PART: _make(o_cfg["optimizer"], taken[DEFAULT_PART], o_cfg["weight_decay"],
                                      o_cfg.get("fused"), device, where="optim.optimizer")}
    for name, part in parts_cfg.items():
        wd = part.get("weight_decay")
        optimizers[name] = _make(part["optimizer"], taken[name], o_cfg["weight_decay"] if wd is None else wd,
                                 o_cfg.get("fused"), device, where=f"optim.parts.{name}.optimizer")
    return CompositeOptimizer(optimizers, route)


def add_params(optimizer: Any, params: Iterable[torch.nn.Parameter], *, lr_factor: float, **options: Any) -> None:
    """Give ``params`` to ``optimizer`` mid-run, as the start would have.

    Each parameter goes to its part (a composite) or the one optimizer; there, matrices get
    that optimizer's weight decay (the largest of its groups) and vectors none, and the new
    groups start at that optimizer's peak lr (its first group's ``initial_lr``) times
    ``lr_factor``, the LR schedule's factor for the current step. ``options`` override
    group settings.
    """
    params = list(params)
    if isinstance(optimizer, CompositeOptimizer):
        by_part: dict[str, list[torch.nn.Parameter]] = {}
        for p in params:
            by_part.setdefault(optimizer.route(p), []).append(p)
        for name, ps in by_part.items():
            add_params(optimizer.optimizers[name], ps, lr_factor=lr_factor, **options)
        return
    base = optimizer.param_groups[0]
    base_lr = base.get("initial_lr", base["lr"])
    wd = max((g.get("weight_decay", 0.0) for g in optimizer.param_groups), default=0.0)
    for group in split_decay(params, wd):
        group.update({"initial_lr": base_lr, **options})
        group["lr"] = group["initial_lr"] * lr_factor
        optimizer.add_param_group(group)


def _make(spec: Mapping[str, Any], params: list[torch.Tensor], weight_decay: float, fused: bool | None,
          device: str, *, where: str) -> torch.optim.Optimizer:
    """``spec`` (a ``_partial_`` target) called with the decay/no-decay groups of ``params``.

    The node is checked as the config check checks it (the target an optimizer class, its
    options, no nested ``_target_``) before anything is called; nested nodes are never
    instantiated.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from apt.checks.optim import optimizer_problems

    problems = optimizer_problems(where, spec)
    if problems:
        raise ConfigProblems(problems)
    try:
        factory = instantiate(spec, _recursive_=False)
    except InstantiationException as exc:
        raise ConfigProblems([f"{where}: {str(exc).splitlines()[0]}"]) from None
    groups = split_decay(params, weight_decay)
    kwargs = {}
    func = getattr(factory, "func", factory)
    try:
        takes_fused = "fused" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes_fused = False
    if takes_fused and fused is not False:
        kwargs["fused"] = True if fused or device in ("cuda", "cpu") or device.startswith("cuda") else None
    try:
        return factory(groups, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        if not kwargs:
            raise ConfigProblems([f"{where}: {exc}"]) from None
        if fused:  # asked for: not quietly replaced by the unfused optimizer
            raise ConfigProblems([f"{where}: optim.fused=true but {str(exc).splitlines()[0]}; set optim.fused=null "
                                  "(fused kernels where available) or false"]) from None
        log.warning("%s: no fused kernel for this device or dtype (%s); using the unfused optimizer",
                    where, str(exc).splitlines()[0])
    try:
        return factory(groups)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigProblems([f"{where}: {exc}"]) from None
