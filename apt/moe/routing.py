"""Token-to-expert routers, ``TopKRouter`` and ``SwitchRouter``, and their auxiliary losses.

A router maps tokens ``(N, C)`` to a :class:`RouterOutput`: the chosen experts, their
combine weights, the probabilities and the raw logits. It adds its weighted losses with
:func:`apt.modeling.auxiliary.add_aux_loss` (``balance`` and ``z``, summed over layers by
the trainer and logged as ``loss/balance`` and ``loss/z``). The conventions are the
literature's, so a coefficient means what it means in the paper:

- the balance loss counts all ``k`` choices of a token (Switch for k=1; HF Mixtral and
  flaxformer for k>1), see :func:`balance_loss`; a uniform router scores ``k``;
- the z-loss is taken on the raw router logits, before temperature and noise (ST-MoE),
  see :func:`z_loss`;
- the temperature divides the logits; noise (``noise_std``, training only) is added after
  that division, so its size does not depend on the temperature.

Where the temperature matters: experts are chosen as the top-k of the (noisy) scaled
logits. Without noise, dividing by a temperature keeps the order of the logits, so the
choice of experts is the same at every temperature and annealing changes only the combine
weights and the balance loss's probabilities. With noise, a lower temperature makes the
logits dominate the noise (sharper, more deterministic choices) and a higher one lets the
noise explore more.

Logits are computed in float32 even under autocast or with bfloat16 weights: the softmax
over experts is where low precision hurts most. ``temperature`` is a settable attribute a
schedule or plugin can anneal. It is kept in a buffer (``temp``), so it is part of the
``state_dict``: a checkpoint restores the temperature the weights were trained with, and an
EMA teacher that copies the student's buffers follows the student's temperature.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from apt.modeling.auxiliary import add_aux_loss
from apt.moe.router_args import check_router_args, check_top1, resolved_normalize

__all__ = ["RouterOutput", "SwitchRouter", "TopKRouter", "balance_loss", "expert_counts", "z_loss"]


class RouterOutput(NamedTuple):
    indices: torch.Tensor  # (N, k) int64 expert ids, best first
    weights: torch.Tensor  # (N, k) float32 combine weights
    probs: torch.Tensor  # (N, E) float32 softmax of the scaled (and, in training, noisy) logits
    logits: torch.Tensor  # (N, E) float32 raw router logits (before temperature and noise)


def balance_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Unweighted load-balancing loss ``E * sum_i f_i * P_i``.

    ``f_i`` is the number of assignments to expert ``i`` over all ``k`` choices of the
    ``N`` tokens, divided by ``N``; ``P_i`` the mean probability of expert ``i``. For k=1
    this is the Switch Transformer loss (Fedus et al. 2021, eq. 4); for k>1 it is what HF
    Mixtral's ``load_balancing_loss_func`` and flaxformer compute. A uniform router scores
    ``k``; one sending every token to the same ``k`` experts scores up to ``E``.
    """
    f = expert_counts(indices, num_experts).to(probs.dtype) / indices.size(0)  # (E,)
    p = probs.mean(dim=0)  # (E,)
    return num_experts * (f * p).sum()


def expert_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert (E,), int64; unlike ``bincount`` no host sync on a GPU."""
    flat = experts.reshape(-1)
    return torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Unweighted router z-loss ``mean(logsumexp(logits)^2)`` on the raw logits (Zoph et al.
    2022, ST-MoE, eq. 5): it keeps the logits small, whatever temperature is applied later."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


class TopKRouter(nn.Module):
    """Softmax router choosing ``top_k`` experts per token.

    ``normalize`` rescales the chosen probabilities to sum to one; by default only when
    ``top_k > 1`` (see :func:`apt.moe.router_args.resolved_normalize`). The arguments are
    checked by :func:`apt.moe.router_args.check_router_args`.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int = 2,
        *,
        temperature: float = 1.0,
        noise_std: float = 0.0,
        normalize: bool | None = None,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
    ) -> None:
        super().__init__()
        check_router_args(num_experts, top_k, temperature, noise_std, balance_coef, z_coef)
        self.num_experts = num_experts
        self.top_k = top_k
        self.register_buffer("temp", torch.tensor(float(temperature)))
        self.noise_std = float(noise_std)
        self.normalize = resolved_normalize(top_k, normalize)
        self.balance_coef = float(balance_coef)
        self.z_coef = float(z_coef)
        self.gate = nn.Linear(d_model, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        """Route tokens ``x`` of shape (N, C) (leading dims are flattened)."""
        x = x.reshape(-1, x.size(-1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.gate.weight.float())  # (N, E)
            scaled = logits * self.temp.float().reciprocal()  # a new tensor: annealing in place stays safe
            if self.training and self.noise_std > 0:
                scaled = scaled + torch.randn_like(scaled) * self.noise_std
            probs = F.softmax(scaled, dim=-1)
            weights, indices = probs.topk(self.top_k, dim=-1)  # (N, k)
            if self.normalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            if self.balance_coef:
                add_aux_loss("balance", self.balance_coef * balance_loss(probs, indices, self.num_experts))
            if self.z_coef:
                add_aux_loss("z", self.z_coef * z_loss(logits))
        return RouterOutput(indices, weights, probs, logits)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before the temperature was saved keep this router's own.
        state_dict.setdefault(prefix + "temp", self.temp.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def temperature(self) -> float:
        """The softmax temperature (reading it syncs with a GPU; set it freely)."""
        return float(self.temp)

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"temperature must be > 0, got {value!r}")
        self.temp.fill_(float(value))

    def extra_repr(self) -> str:
        return (f"experts={self.num_experts}, top_k={self.top_k}, temperature={self.temperature}, "
                f"noise_std={self.noise_std}, normalize={self.normalize}")


class SwitchRouter(TopKRouter):
    """Switch Transformer routing: top-1, combine weight = the chosen expert's probability."""

    def __init__(self, d_model: int, num_experts: int, top_k: int = 1, **kwargs: Any) -> None:
        check_top1(top_k)
        kwargs.setdefault("normalize", False)
        super().__init__(d_model, num_experts, 1, **kwargs)

