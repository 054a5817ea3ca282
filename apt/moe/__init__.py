"""Mixture of experts, in one place: routing, experts, the layer and sparse upcycling.

    routing.py   routers (top-k, switch), the balance and z losses, their conventions
    experts.py   expert modules run on their slices of the sorted tokens (grouped GEMM on CUDA)
    layer.py     MoELayer: dropless (causal) or capacity-limited dispatch
    upcycle.py   dense FFNs -> MoE layers mid-run, and the optimizer hand-over

What uses it from outside: the ``moe`` FFN provider and the ``topk``/``switch`` router
providers (:mod:`apt.providers.moe`, :mod:`apt.providers.router`) and the ``moe`` plugin
(:mod:`apt.plugins.builtin.moe`). The trainer and the distributed wrappers do not know MoE
exists: routers add their losses through :mod:`apt.modeling.auxiliary`, and expert lists
declare there that they may leave parameters unused.
"""

from apt.moe.experts import ExpertList, Groups, grouped_ffn, hoist_dropout
from apt.moe.layer import MoELayer
from apt.moe.routing import (
    RouterOutput,
    SwitchRouter,
    TopKRouter,
    balance_loss,
    expert_counts,
    z_loss,
)
from apt.moe.upcycle import Upcycled, add_upcycled_params, combine_weights_sum_to_one, upcycle_model

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
    "combine_weights_sum_to_one",
    "expert_counts",
    "grouped_ffn",
    "hoist_dropout",
    "upcycle_model",
    "z_loss",
]
