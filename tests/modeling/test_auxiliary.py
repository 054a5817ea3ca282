"""Aux losses: what a forward adds is collected around it, nothing else; unused parameters."""

from __future__ import annotations

import torch
from torch import nn

from apt.modeling.auxiliary import add_aux_loss, collect_aux_losses, has_unused_parameters


class Reporting(nn.Module):
    def __init__(self, name: str = "extra") -> None:
        super().__init__()
        self.name = name
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        add_aux_loss(self.name, self.scale * x.pow(2).mean())
        return x


def test_losses_added_in_the_forward_are_summed_by_name():
    model = nn.Sequential(Reporting(), Reporting(), Reporting("other"))
    x = torch.ones(3, 4)
    with collect_aux_losses() as aux:
        model(x)
    assert set(aux) == {"extra", "other"}
    assert aux["extra"].item() == 4.0 and aux["other"].item() == 2.0
    aux["extra"].backward()
    assert model[0].scale.grad.item() == 1.0


def test_outside_a_collection_losses_are_dropped_and_collections_nest():
    layer = Reporting()
    layer(torch.ones(2))  # evaluation, sampling, a teacher's forward: nowhere to go
    with collect_aux_losses() as outer:
        layer(torch.ones(2))
        with collect_aux_losses() as inner:
            layer(torch.ones(2))
    assert outer["extra"].item() == 2.0 and inner["extra"].item() == 2.0


def test_a_collection_closes_even_when_the_forward_raises():
    try:
        with collect_aux_losses():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with collect_aux_losses() as aux:
        Reporting()(torch.ones(1))
    assert aux["extra"].item() == 2.0


def test_has_unused_parameters_follows_the_layers_declaration():
    class Sparse(nn.Linear):
        may_leave_parameters_unused = True

    assert not has_unused_parameters(nn.Sequential(nn.Linear(2, 2)))
    assert has_unused_parameters(nn.Sequential(nn.Linear(2, 2), Sparse(2, 2)))
