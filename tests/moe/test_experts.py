"""Experts: the per-expert path and the grouped-GEMM path compute the same function; dropout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from apt.modeling.auxiliary import has_unused_parameters
from apt.moe.experts import ExpertList, Groups, grouped_ffn, hoist_dropout
from apt.providers.ffn import MLP, SwiGLU


def _sorted_rows(E: int, M: int, C: int, seed: int = 0) -> tuple[torch.Tensor, Groups]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, E - 1, (M,), generator=gen).sort().values  # the last expert gets no rows
    return torch.randn(M, C, generator=gen), Groups(ids, torch.bincount(ids, minlength=E))


def _reference(modules, x, groups):
    return torch.cat([m(xe) for m, xe in zip(modules, x.split(groups.sizes()), strict=True)])


def test_expert_list_runs_each_expert_on_its_slice():
    modules = [nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3)]
    x, groups = _sorted_rows(3, 10, 8)
    experts = ExpertList(modules)
    torch.testing.assert_close(experts(x, groups), _reference(modules, x, groups))
    assert has_unused_parameters(nn.Sequential(experts))  # the last expert got nothing


@pytest.mark.parametrize("make", [lambda: MLP(16, 32), lambda: MLP(16, 32, bias=True, activation="relu"),
                                  lambda: SwiGLU(16, 24, bias=True)], ids=["mlp", "mlp-bias-relu", "swiglu-bias"])
def test_grouped_gemm_path_equals_the_per_expert_path_with_gradients(make):
    """The CUDA path, run here on CPU (torch's grouped GEMM exists there in eager float32)."""
    torch.manual_seed(0)
    experts = ExpertList([make() for _ in range(4)])
    twin = copy.deepcopy(experts)
    x, groups = _sorted_rows(4, 21, 16)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = experts(xa, groups), grouped_ffn(list(twin), xb, groups, torch.float32)
    torch.testing.assert_close(yb, ya, atol=1e-6, rtol=1e-5)
    g = torch.randn(ya.shape)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-6, rtol=1e-5)
    for (name, pa), pb in zip(experts.named_parameters(), twin.parameters(), strict=True):
        if pa.grad is None:  # the last expert had no rows: zero gradient on the grouped path
            assert not pb.grad.any(), name
        else:
            torch.testing.assert_close(pb.grad, pa.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_grouped_gemm_path_in_bfloat16():
    torch.manual_seed(0)
    experts = [MLP(16, 32) for _ in range(3)]
    x, groups = _sorted_rows(3, 9, 16)
    ref = _reference(experts, x, groups)
    y = grouped_ffn(experts, x, groups, torch.bfloat16)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=2e-2)


def test_dropout_is_hoisted_out_of_built_in_experts_only():
    experts = [MLP(8, 16, dropout=0.3) for _ in range(2)]
    assert hoist_dropout(experts) == pytest.approx(0.3)
    assert all(isinstance(e.dropout, nn.Identity) for e in experts)
    custom = [nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3))]
    assert hoist_dropout(custom) == 0.0 and isinstance(custom[0][1], nn.Dropout)
    mixed = [MLP(8, 16, dropout=0.1), MLP(8, 16, dropout=0.2)]
    assert hoist_dropout(mixed) == 0.0 and all(isinstance(e.dropout, nn.Dropout) for e in mixed)
