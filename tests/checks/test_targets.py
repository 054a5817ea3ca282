"""apt.checks.targets: a ``_target_`` is found (or not) from the source, without importing it."""

from __future__ import annotations

import subprocess
import sys

from apt.checks.targets import target_keywords, target_problem


def test_targets_are_resolved_without_importing_their_package():
    code = ("import sys\nfrom apt.checks.targets import target_keywords, target_problem as p\n"
            "assert p('torch.optim.AdamW') is None and p('torch.optim.adamw.AdamW') is None\n"
            "assert 'AdamW' in p('torch.optim.Adamw') and \"did you mean 'AdamW'\" in p('torch.optim.Adamw')\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


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
