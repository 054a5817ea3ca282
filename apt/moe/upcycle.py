"""Sparse upcycling: turn a model's dense FFNs into MoE layers mid-run (Komatsuzaki et al. 2023).

Each chosen block's FFN becomes an :class:`~apt.moe.layer.MoELayer` whose experts are
copies of that FFN, each perturbed by Gaussian noise of ``noise`` times the tensor's own
std (to break the symmetry between copies), plus a fresh router. With noise 0 and a router
whose combine weights sum to one per token (see :func:`combine_weights_sum_to_one`), the
new layer computes the dense FFN's function exactly, whatever experts it picks, so training
continues from the dense model. The optimizer is moved over by :func:`add_upcycled_params`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from apt.moe.layer import MoELayer

__all__ = ["Upcycled", "add_upcycled_params", "combine_weights_sum_to_one", "upcycle_model"]


class Upcycled(NamedTuple):
    """What :func:`upcycle_model` changed, for moving an optimizer over."""

    replaced: dict[nn.Parameter, list[nn.Parameter]]  # dense param -> its copy in each expert
    routers: list[nn.Parameter]  # new router parameters, layer by layer


def upcycle_model(
    model: nn.Module,
    make_router: Callable[[int, int, int], nn.Module],
    *,
    num_experts: int,
    top_k: int,
    capacity_factor: float | None = None,
    noise: float = 0.0,
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> Upcycled:
    """Replace ``model.blocks[i].ffn`` by an MoE layer of noisy copies, in place.

    ``make_router(d_model, num_experts, top_k)`` returns a router module; its weight
    matrices are re-drawn from N(0, 0.02) like the model's. The global RNG is not consumed
    (noise and router weights come from ``seed``), so a run resumed before the upcycle
    makes the same experts as an uninterrupted one. The layer applies a built-in FFN's
    dropout to its combined output, so the upcycled model also equals the dense one in
    training (same masks, see :mod:`apt.moe.experts`).
    """
    gen = torch.Generator().manual_seed(seed)
    chosen = range(len(model.blocks)) if layers is None else layers
    out = Upcycled({}, [])
    for i in chosen:
        block = model.blocks[i]
        dense = block.ffn
        if isinstance(dense, MoELayer):
            raise ValueError(f"moe: block {i}'s FFN is already a mixture of experts")
        ref = next(dense.parameters())
        experts = [_perturbed_copy(dense, noise, gen) for _ in range(num_experts)]
        with torch.random.fork_rng(devices=[]):
            router = make_router(model.config.d_model, num_experts, top_k)
        with torch.no_grad():
            for p in router.parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        router.to(device=ref.device, dtype=ref.dtype)
        block.ffn = MoELayer(experts, router, top_k, capacity_factor).train(dense.training)
        for name, p in dense.named_parameters():
            out.replaced[p] = [e.get_parameter(name) for e in experts]
        out.routers.extend(router.parameters())
    return out


def add_upcycled_params(optimizer: Any, upcycled: Upcycled, *, copy_state: bool = True) -> int:
    """Swap dense parameters for their expert copies inside the optimizer's own groups.

    Each expert copy takes the place (and group, so weight decay and LR are unchanged) of
    the dense parameter it came from, with its own clone of that parameter's state when
    ``copy_state``. Router parameters join the group holding parameters of the same dimensionality
    (matrices decay, vectors do not). The order is deterministic, so an optimizer state
    saved after the upcycle loads into a resumed run's optimizer. Returns the number of
    parameters added.

    With several optimizers (:class:`apt.optim.CompositeOptimizer`) each one swaps the dense
    parameters it holds, and a router parameter joins a group of the optimizer whose part
    takes it (the composite's ``route``: e.g. Muon for the router matrix, AdamW for a bias).
    """
    parts = getattr(optimizer, "optimizers", None)
    if parts is None:
        return _swap(optimizer, upcycled.replaced, upcycled.routers, copy_state)
    routed: dict[str, list[nn.Parameter]] = {}
    for p in upcycled.routers:
        routed.setdefault(optimizer.route(p), []).append(p)
    return sum(_swap(opt, upcycled.replaced, routed.get(name, []), copy_state) for name, opt in parts.items())


def _swap(optimizer: torch.optim.Optimizer, replaced: dict[nn.Parameter, list[nn.Parameter]],
          routers: list[nn.Parameter], copy_state: bool) -> int:
    """:func:`add_upcycled_params` on one torch optimizer, which takes ``routers`` too."""
    added = 0
    group_of_ndim: dict[bool, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        new_params: list[nn.Parameter] = []
        for p in group["params"]:
            if p not in replaced:
                new_params.append(p)
                continue
            group_of_ndim.setdefault(p.ndim >= 2, group)
            old_state = optimizer.state.pop(p, None)
            for q in replaced[p]:
                new_params.append(q)
                if copy_state and old_state:
                    optimizer.state[q] = {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                                          for k, v in old_state.items()}
                added += 1
        group["params"] = new_params
    for p in routers:
        group = group_of_ndim.get(p.ndim >= 2) or optimizer.param_groups[0]
        group["params"].append(p)
        added += 1
    return added


@torch.no_grad()
def combine_weights_sum_to_one(router: nn.Module, d_model: int, *, tokens: int = 64, seed: int = 0) -> float:
    """The largest ``|sum_j w_j - 1|`` over random tokens routed in eval mode.

    Upcycled experts that are exact copies compute ``sum_j w_j * FFN(x)``: the dense
    function only when this is (close to) 0.
    """
    was_training = router.training
    router.eval()
    try:
        ref = next(router.parameters())
        x = torch.randn(tokens, d_model, generator=torch.Generator().manual_seed(seed))
        weights = router(x.to(device=ref.device, dtype=ref.dtype)).weights.float()  # (tokens, k)
    finally:
        router.train(was_training)
    return float((weights.sum(-1) - 1.0).abs().max())


def _perturbed_copy(ffn: nn.Module, noise: float, gen: torch.Generator) -> nn.Module:
    expert = copy.deepcopy(ffn)
    if noise > 0:
        with torch.no_grad():
            for p in expert.parameters():
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                eps = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                p.add_((eps * noise * std).to(device=p.device, dtype=p.dtype))
    return expert
