"""apt.checks.constructor: what an optimizer's ``__init__`` would refuse, read from its source."""

from __future__ import annotations

from apt.checks.constructor import constructor_problem
from tests.helpers import assert_runs


def test_torch_optimizers_refuse_what_they_would_refuse_when_built_without_importing_torch():
    code = ("import sys\nfrom apt.checks.constructor import constructor_problem as c\n"
            "assert c('torch.optim.SGD', {'lr': 0.1, 'momentum': 0, 'nesterov': True}) == "
            "'Nesterov momentum requires a momentum and zero dampening'\n"
            "assert c('torch.optim.SGD', {'lr': 0.1, 'momentum': 0.9, 'nesterov': True}) is None\n"
            "assert c('torch.optim.AdamW', {'lr': 1e-3, 'betas': [0.9, 1.5]}) == "
            "'Invalid beta parameter at index 1: 1.5'\n"  # through super().__init__ into Adam's checks
            "assert c('torch.optim.AdamW', {'lr': 1e-3, 'betas': [0.9, 0.99], 'eps': 1e-8}) is None\n"
            "assert c('torch.optim.Muon', {'lr': 0.02, 'momentum': -1}) == 'momentum should be >= 0 but is: -1'\n"
            "assert c('torch.optim.Adam', {'fused': True, 'differentiable': True}) == "
            "'`fused` does not support `differentiable`'\n"
            "assert c('torch.optim.Adam', {'differentiable': True}, unknown=('fused',)) is None\n"
            "assert 'torch' not in sys.modules\n")
    assert_runs(code, timeout=60)


OPT = '''
class Base:
    def __init__(self, params, defaults):
        if len(defaults) == 0:
            raise ValueError("never reached: defaults is assigned in the subclass")


class Opt(Base):
    def __init__(self, params, lr=0.1, *, mode="a", scale=None, **kwargs):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("a tensor lr")
        if not 0 < lr <= 1:
            raise ValueError(f"lr must be in (0, 1], got {lr!r}")
        if mode not in ("a", "b"):
            raise ValueError(f"unknown mode {mode}")
        if scale is not None and scale(lr):
            raise ValueError("a call: unknown, skipped")
        defaults = dict(lr=lr)
        super().__init__(params, defaults)
        if mode == "b" and kwargs:
            raise TypeError("unknown")


class Guarded:
    def __init__(self, params, fast=False):
        if probe():
            return
        raise ValueError("only when probe() is false: not known here")
'''


def test_conditions_on_plain_values_decide_and_anything_else_is_unknown(tmp_path, monkeypatch):
    (tmp_path / "my_opts.py").write_text(OPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert constructor_problem("my_opts.Opt", {}) is None
    assert constructor_problem("my_opts.Opt", {"lr": 2}) == "lr must be in (0, 1], got 2"
    assert constructor_problem("my_opts.Opt", {"mode": "c"}) == "unknown mode c"
    assert constructor_problem("my_opts.Opt", {"scale": "x"}) is None
    assert constructor_problem("my_opts.Guarded", {}) is None  # a return in an unknown branch
    assert constructor_problem("my_opts.Missing", {}) is None and constructor_problem("nosuch.Opt", {}) is None


def test_checking_every_shipped_optimizer_config_imports_no_torch():
    code = ("import sys\nfrom apt.app import check_config\n"
            "for optim in ('adamw', 'sgd', 'muon'):\n"
            "    check_config(['model=tiny', 'data=synthetic', 'trainer=debug', f'optim={optim}'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    assert_runs(code)
