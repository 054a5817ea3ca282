"""build_optimizer and add_params: which optimizer takes which parameter, at the start and mid-run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apt.core.config import APTConfig
from apt.core.errors import ConfigProblems
from apt.modeling import ModelBuilder
from apt.optim import CompositeOptimizer, ParamRouter, add_params, build_optimizer

ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}
MUON = {"_target_": "torch.optim.Muon", "_partial_": True, "lr": 0.02}


def _model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    dims = dict(d_model=32, num_heads=2, num_layers=2, vocab_size=64, max_seq_len=16)
    return ModelBuilder(APTConfig(**{**dims, **overrides})).build_model()


def _cfg(parts=None, **kw):
    return {"optimizer": ADAMW, "weight_decay": 0.1, "fused": None, "parts": parts or {}, **kw}


def _names(model: nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_without_parts_one_torch_optimizer_with_decay_and_no_decay_groups():
    model = _model()
    opt = build_optimizer(_cfg(), model, device="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"])


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = _model(bias=True, position="learned")
    opt = build_optimizer(_cfg({"hidden": {"params": "hidden_matrices", "optimizer": MUON, "weight_decay": 0.0}}),
                          model, device="cpu")
    assert isinstance(opt, CompositeOptimizer) and list(opt.optimizers) == ["default", "hidden"]
    muon, adamw = opt.optimizers["hidden"], opt.optimizers["default"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    hidden = {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    assert _names(model, (p for g in muon.param_groups for p in g["params"])) == hidden
    rest = _names(model, (p for g in adamw.param_groups for p in g["params"]))
    assert rest == {n for n, _ in model.named_parameters()} - hidden
    assert {"wte.weight", "wpe.weight", "norm_f.weight", "blocks.0.norm1.weight", "blocks.0.attn.c_attn.bias"} <= rest
    assert [g["weight_decay"] for g in muon.param_groups] == [0.0]
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]  # embeddings decay, vectors not
    assert opt.param_groups[0] is adamw.param_groups[0]  # the default part first: its lr is the logged lr


def test_parts_are_matched_in_order_and_their_weight_decay_defaults_to_optim_weight_decay():
    model = _model(position="learned")
    parts = {"emb": {"params": "embeddings", "optimizer": {**ADAMW, "lr": 0.05}},
             "mats": {"params": "matrices", "optimizer": MUON, "weight_decay": 0.0}}
    opt = build_optimizer(_cfg(parts), model, device="cpu")
    assert _names(model, opt.optimizers["emb"].param_groups[0]["params"]) == {"wte.weight", "wpe.weight"}
    assert opt.optimizers["emb"].param_groups[0]["weight_decay"] == 0.1
    assert "wte.weight" not in _names(model, opt.optimizers["mats"].param_groups[0]["params"])
    assert all(p.ndim < 2 for g in opt.optimizers["default"].param_groups for p in g["params"])


def test_a_part_that_takes_nothing_or_leaves_nothing_is_a_config_problem():
    model = _model()
    with pytest.raises(ConfigProblems, match="optim.parts.hidden: params=hidden_matrices takes no parameter"):
        build_optimizer(_cfg({"first": {"params": "matrices", "optimizer": MUON, "weight_decay": 0.0},
                              "hidden": {"params": "hidden_matrices", "optimizer": MUON}}), model, device="cpu")
    with pytest.raises(ConfigProblems, match="optim.parts take every parameter and leave none"):
        build_optimizer(_cfg({"m": {"params": "matrices", "optimizer": MUON, "weight_decay": 0.0},
                              "v": {"params": "vectors", "optimizer": ADAMW}}), model, device="cpu")


def test_an_optimizer_that_refuses_its_parameters_is_a_config_problem_naming_the_part():
    with pytest.raises(ConfigProblems, match=r"optim.parts.gains.optimizer: Muon only supports 2D parameters"):
        build_optimizer(_cfg({"gains": {"params": "vectors", "optimizer": MUON}}), _model(), device="cpu")


def test_add_params_gives_each_part_its_own_peak_lr_times_the_schedule_factor():
    model = _model()
    opt = build_optimizer(_cfg({"hidden": {"params": "hidden_matrices", "optimizer": MUON, "weight_decay": 0.0}}),
                          model, device="cpu")
    for g in opt.param_groups:  # what WarmupCosine does at the start
        g.setdefault("initial_lr", g["lr"])
    model.blocks[0].extra = nn.Linear(32, 32)  # a module a plugin adds mid-run
    model.blocks[0].gain = nn.Parameter(torch.ones(32))
    add_params(opt, [model.blocks[0].extra.weight, model.blocks[0].extra.bias, model.blocks[0].gain],
               lr_factor=0.5)
    muon, adamw = opt.optimizers["hidden"], opt.optimizers["default"]
    assert muon.param_groups[-1]["params"] == [model.blocks[0].extra.weight]
    assert muon.param_groups[-1]["lr"] == pytest.approx(0.01) and muon.param_groups[-1]["initial_lr"] == 0.02
    assert muon.param_groups[-1]["weight_decay"] == 0.0
    assert adamw.param_groups[-1]["params"] == [model.blocks[0].extra.bias, model.blocks[0].gain]
    assert adamw.param_groups[-1]["lr"] == pytest.approx(1.5e-3) and adamw.param_groups[-1]["weight_decay"] == 0.0


def test_a_parameter_outside_the_model_cannot_be_routed():
    model = _model()
    route = ParamRouter(model, {"hidden": "hidden_matrices"})
    with pytest.raises(ValueError, match=r"a parameter of shape \(3, 3\) is not in the model"):
        route(nn.Parameter(torch.zeros(3, 3)))


class NoFusedKernel(torch.optim.SGD):
    """An optimizer whose fused kernel does not exist here (as for some device/dtype pairs)."""

    def __init__(self, params, lr=0.1, fused=None):
        if fused:
            raise RuntimeError("fused kernel not available for this dtype")
        super().__init__(params, lr=lr)


def test_a_missing_fused_kernel_is_an_error_when_asked_for_and_a_warning_otherwise(caplog):
    spec = {"_target_": f"{__name__}.NoFusedKernel", "_partial_": True}
    with pytest.raises(ConfigProblems, match=r"optim.optimizer: optim.fused=true but fused kernel not available"):
        build_optimizer(_cfg(optimizer=spec, fused=True), _model(), device="cpu")
    with caplog.at_level("WARNING", logger="apt.optim.factory"):
        opt = build_optimizer(_cfg(optimizer=spec, fused=None), _model(), device="cpu")
    assert isinstance(opt, NoFusedKernel)
    assert "no fused kernel for this device or dtype (fused kernel not available for this dtype)" in caplog.text
    assert isinstance(build_optimizer(_cfg(optimizer=spec, fused=False), _model(), device="cpu"), NoFusedKernel)


CALLS: list = []


def records_a_call(*args, **kwargs):
    CALLS.append((args, kwargs))


def test_a_target_that_is_not_an_optimizer_class_is_refused_before_it_is_called():
    spec = {"_target_": f"{__name__}.records_a_call", "_partial_": True, "lr": 0.1}
    with pytest.raises(ConfigProblems, match=r"optim.optimizer._target_='.*records_a_call' is the function "
                                             r".*records_a_call, not an optimizer class"):
        build_optimizer(_cfg(optimizer=spec), _model(), device="cpu")
    nested = {**ADAMW, "betas": {"_target_": f"{__name__}.records_a_call"}}
    with pytest.raises(ConfigProblems, match="optim.optimizer.betas: a nested _target_ is not built here"):
        build_optimizer(_cfg(optimizer=nested), _model(), device="cpu")
    assert CALLS == []
