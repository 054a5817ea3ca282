"""apt.checks.targets: a ``_target_`` is found (or not) from the source, without importing it."""

from __future__ import annotations

from apt.checks.targets import class_problem, target_keywords, target_problem
from tests.helpers import assert_runs


def test_targets_are_resolved_without_importing_their_package():
    code = ("import sys\nfrom apt.checks.targets import target_keywords, target_problem as p\n"
            "assert p('torch.optim.AdamW') is None and p('torch.optim.adamw.AdamW') is None\n"
            "assert 'AdamW' in p('torch.optim.Adamw') and \"did you mean 'AdamW'\" in p('torch.optim.Adamw')\n"
            "assert 'torch' not in sys.modules\n")
    assert_runs(code, timeout=60)


def test_missing_module_and_attribute_are_named():
    assert target_problem("nosuchpkg.Thing") == "'nosuchpkg.Thing': no module named 'nosuchpkg'"
    assert target_problem("json.dumpz") == "'json.dumpz': module 'json' has no 'dumpz' (did you mean 'dump'?)"
    assert target_problem("apt.providers.router:TopKRouterProvider") is None
    assert target_problem("json") is None  # a module


def test_what_the_source_cannot_tell_is_left_to_the_import(tmp_path, monkeypatch):
    (tmp_path / "lazy_mod.py").write_text("def __getattr__(name):\n    return name\n")
    (tmp_path / "cond_mod.py").write_text("try:\n    from json import dumps as fast\nexcept ImportError:\n"
                                          "    fast = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert target_problem("lazy_mod.Anything") is None  # module __getattr__: unknown, not an error
    assert target_problem("cond_mod.fast") is None  # bound in a try branch
    assert "has no 'slow'" in target_problem("cond_mod.slow")


def test_keywords_of_a_class_follow_re_exports_and_stay_unknown_where_the_source_cannot_tell(tmp_path, monkeypatch):
    assert target_keywords("torch.optim.Muon")[:3] == ("lr", "weight_decay", "momentum")  # torch.optim._muon
    assert "betas" in target_keywords("torch.optim.AdamW") and "params" not in target_keywords("torch.optim.AdamW")
    (tmp_path / "kw_mod.py").write_text("class Opt:\n    def __init__(self, params, lr=1, *, beta=2):\n        pass\n"
                                        "class Loose:\n    def __init__(self, params, **kw):\n        pass\n"
                                        "class Child(Opt):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert target_keywords("kw_mod.Opt") == ("lr", "beta")
    assert target_keywords("kw_mod.Loose") is None and target_keywords("kw_mod.Child") is None
    assert target_keywords("nosuchpkg.Opt") is None


OPTIMIZER = ("torch.optim.optimizer:Optimizer", "an optimizer class")


def test_optimizer_classes_are_told_from_the_source_without_importing_torch():
    code = ("import sys\nfrom apt.checks.targets import class_problem\n"
            f"base, kind = {OPTIMIZER!r}\n"
            "for t in ('torch.optim.AdamW', 'torch.optim.SGD', 'torch.optim.Muon', 'torch.optim.adamw.AdamW'):\n"
            "    assert class_problem(t, base, kind) is None, t\n"
            "p = class_problem('torch.optim.lr_scheduler.LambdaLR', base, kind)\n"
            "assert p == (\"'torch.optim.lr_scheduler.LambdaLR' is the class torch.optim.lr_scheduler.LambdaLR, \"\n"
            "             'not an optimizer class'), p\n"
            "assert 'is the function logging.config.dictConfig' in class_problem('logging.config.dictConfig', base, kind)\n"
            "assert 'torch' not in sys.modules\n")
    assert_runs(code, timeout=60)


def test_a_target_is_classified_from_its_source_or_its_module_but_never_called(tmp_path, monkeypatch):
    """Relative re-exports and base classes are followed in the source; where the source
    cannot tell (a decorated or assigned name), the module is imported and the object looked
    at. Nothing the target names runs."""
    pkg = tmp_path / "optpkg"
    pkg.mkdir()
    called = tmp_path / "CALLED"
    (pkg / "__init__.py").write_text("from .impl import Good, NotOne, make\n")
    (pkg / "base.py").write_text("class Base:\n    pass\n")
    (pkg / "impl.py").write_text(
        "import functools\nfrom pathlib import Path\n\nfrom optpkg import base\nfrom .base import Base\n\n\n"
        f"def make(*a):\n    Path({str(called)!r}).write_text('called')\n\n\n"
        "class Good(Base):\n    pass\n\n\nclass Dotted(base.Base):\n    pass\n\n\n"
        "class NotOne:\n    def __init__(self):\n        make()\n\n\n"
        "@functools.lru_cache\ndef wrapped():\n    make()\n\n\n"
        "Alias = Good\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base, kind = "optpkg.base:Base", "a Base"
    assert class_problem("optpkg.Good", base, kind) is None
    assert class_problem("optpkg.impl.Dotted", base, kind) is None
    assert class_problem("optpkg.impl.Alias", base, kind) is None  # assigned: imported, then looked at
    assert class_problem("optpkg.make", base, kind) == "'optpkg.make' is the function optpkg.impl.make, not a Base"
    assert class_problem("optpkg.NotOne", base, kind) == "'optpkg.NotOne' is the class optpkg.impl.NotOne, not a Base"
    assert class_problem("optpkg.impl.wrapped", base, kind).startswith(
        "'optpkg.impl.wrapped' is a _lru_cache_wrapper object, not a Base")
    assert class_problem("optpkg.base", base, kind) == "'optpkg.base' is the module optpkg.base, not a Base"
    assert class_problem("builtins.print", base, kind) == (
        "'builtins.print' is the built-in function builtins.print, not a Base")
    assert not called.exists()
