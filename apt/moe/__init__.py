"""Mixture of experts, in one place: routing, experts, the layer and sparse upcycling.

    routing.py      routers (top-k, switch), the balance and z losses, their conventions
    router_args.py  the routers' argument rules, without torch (checked configs use them)
    experts.py      expert modules run on their slices of the sorted tokens (grouped GEMM on CUDA)
    layer.py        MoELayer: dropless (causal) or capacity-limited dispatch
    upcycle.py      dense FFNs -> MoE layers mid-run, and the optimizer hand-over

What uses it from outside: the ``moe`` FFN provider and the ``topk``/``switch`` router
providers (:mod:`apt.providers.moe`, :mod:`apt.providers.router`) and the ``moe`` plugin
(:mod:`apt.plugins.builtin.moe`). The trainer and the distributed wrappers do not know MoE
exists: routers add their losses through :mod:`apt.modeling.auxiliary`, and expert lists
declare there that they may leave parameters unused.

Names are imported on first use, so checking a config (:mod:`apt.moe.router_args`) does
not import torch.
"""

from __future__ import annotations

from apt.core.lazy import lazy_attributes

__all__ = [
    "ExpertList",
    "Groups",
    "MoELayer",
    "RouterOutput",
    "SwitchRouter",
    "TopKRouter",
    "Upcycled",
    "add_upcycled_params",
    "balance_loss",
    "check_router_args",
    "combine_weights_sum_to_one",
    "expert_counts",
    "grouped_ffn",
    "hoist_dropout",
    "upcycle_model",
    "weights_sum_to_one",
    "z_loss",
]

_LOCATIONS = {
    "ExpertList": "apt.moe.experts",
    "Groups": "apt.moe.experts",
    "MoELayer": "apt.moe.layer",
    "RouterOutput": "apt.moe.routing",
    "SwitchRouter": "apt.moe.routing",
    "TopKRouter": "apt.moe.routing",
    "Upcycled": "apt.moe.upcycle",
    "add_upcycled_params": "apt.moe.upcycle",
    "balance_loss": "apt.moe.routing",
    "check_router_args": "apt.moe.router_args",
    "combine_weights_sum_to_one": "apt.moe.upcycle",
    "expert_counts": "apt.moe.routing",
    "grouped_ffn": "apt.moe.experts",
    "hoist_dropout": "apt.moe.experts",
    "upcycle_model": "apt.moe.upcycle",
    "weights_sum_to_one": "apt.moe.router_args",
    "z_loss": "apt.moe.routing",
}


__getattr__ = lazy_attributes(__name__, _LOCATIONS)
