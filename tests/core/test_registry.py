"""Registry: register/get, defaults, excludes, clashes, lazy targets, entry points."""

from importlib import metadata

import pytest

from apt.core import AttentionProvider, FFNProvider, Provider, Registry, RegistryError
from tests.helpers import assert_runs


class A(AttentionProvider):
    def create_layer(self, d_model, num_heads, dropout=0.0, **kw):
        return ("A", d_model, num_heads)


class B(AttentionProvider):
    pass


class F(FFNProvider):
    pass


@pytest.fixture
def reg():
    r = Registry()
    r.register("attention", "a", A, default=True)
    r.register("attention", "b", B, excludes=["ffn:f"])
    r.register("ffn", "f", F)
    return r


def test_get_by_name_default_and_config(reg):
    p = reg.get("attention", "b", {"k": 1})
    assert isinstance(p, B) and p.config == {"k": 1}
    assert isinstance(reg.get("attention"), A)
    assert reg.get("attention").create_layer(8, 2) == ("A", 8, 2)
    assert reg.get("ffn").config == {}  # single provider of a kind is its default
    assert reg.resolve_name("attention", None) == "a"


def test_unknown_names_list_the_available_ones(reg):
    with pytest.raises(RegistryError, match=r"unknown attention provider 'c'.*available: \['a', 'b'\]"):
        reg.get("attention", "c")
    with pytest.raises(RegistryError, match="did you mean 'a'"):
        reg.get_class("attention", "aa")
    with pytest.raises(RegistryError, match=r"unknown provider kind 'router'.*\['attention', 'ffn'\]"):
        reg.get("router", "x")


def test_list_providers(reg):
    assert reg.list_providers("attention") == ["a", "b"]
    assert reg.list_providers() == {"attention": ["a", "b"], "ffn": ["f"]}
    assert Registry().list_providers() == {}


def test_same_name_different_class_needs_override(reg):
    reg.register("attention", "a", A)  # same class again: no-op
    with pytest.raises(RegistryError, match="'a' is already registered.*override=True"):
        reg.register("attention", "a", B)
    reg.register("attention", "a", B, override=True)
    assert reg.get_class("attention", "a") is B


def test_excludes_both_directions_and_bare_names(reg):
    reg.check_selection({"attention": "a", "ffn": "f"})
    with pytest.raises(RegistryError, match="attention provider 'b' excludes ffn provider 'f'"):
        reg.check_selection({"attention": "b", "ffn": "f"})
    reg.register("ffn", "g", F, excludes="a")  # a bare name, any kind; a str is one name
    with pytest.raises(RegistryError, match="'g' excludes attention provider 'a'"):
        reg.check_selection({"attention": None, "ffn": "g"})


def test_no_default_among_several(reg):
    reg.register("router", "r1", Provider)
    reg.register("router", "r2", Provider)
    with pytest.raises(RegistryError, match=r"no default router provider.*\['r1', 'r2'\]"):
        reg.get("router")


def test_lazy_string_targets(reg):
    reg.register("attention", "lazy", f"{A.__module__}:A")
    assert reg.get_class("attention", "lazy") is A
    reg.register("attention", "lazy", A)  # the same class as a path and as an object: no clash
    reg.register("attention", "broken", "no_such_mod_abc:X")
    with pytest.raises(RegistryError, match="'broken' points at 'no_such_mod_abc:X'.*cannot be imported"):
        reg.get("attention", "broken")


def test_register_argument_errors_and_unregister(reg):
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("", "x", A)
    with pytest.raises(TypeError, match="class or 'module:attr'"):
        reg.register("attention", "x", 3)
    reg.unregister("attention", "a")
    assert reg.names("attention") == ["b"]
    with pytest.raises(RegistryError):
        reg.unregister("attention", "a")


def test_builtins_are_registered_without_importing_torch():
    code = ("import sys; from apt.core import registry\n"
            "assert registry.default_name('attention') == 'sdpa'\n"
            "assert {'sdpa', 'flash'} <= set(registry.names('attention'))\n"
            "assert registry.default_name('ffn') == 'mlp' and registry.default_name('router') == 'topk'\n"
            "assert 'torch' not in sys.modules\n")
    assert_runs(code)


def test_entry_points_register_classes_and_call_functions(tmp_path, monkeypatch):
    (tmp_path / "third_party_apt.py").write_text(
        "from apt.core import AttentionProvider, FFNProvider\n"
        "class Ext(AttentionProvider):\n    pass\n"
        "class Fn(FFNProvider):\n    pass\n"
        "def register(reg):\n    reg.register('ffn', 'viafn', Fn)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        metadata.EntryPoint("attention.ext", "third_party_apt:Ext", "apt.providers"),
        metadata.EntryPoint("bare", "third_party_apt:Ext", "apt.providers"),
        metadata.EntryPoint("hook", "third_party_apt:register", "apt.providers"),
        metadata.EntryPoint("attention.bad", "third_party_apt:Missing", "apt.providers"),
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps if group == "apt.providers" else [])
    reg = Registry(entry_points=True)
    assert reg.names("attention") == ["bare", "ext"]  # discovered on first lookup; bad one skipped
    assert reg.names("ffn") == ["viafn"]
    assert reg.spec("attention", "ext").origin.startswith("entry point attention.ext")


CALLS: list = []


def not_a_provider(*args, **kwargs):
    CALLS.append((args, kwargs))


def test_only_provider_classes_of_the_kind_are_registered_or_loaded_and_nothing_else_is_called(reg):
    """A lazy target that turns out not to be a provider class is refused when it is imported,
    before the registry would call it with the provider's options."""
    reg.register("attention", "fn", f"{__name__}:not_a_provider")
    with pytest.raises(RegistryError, match=r"'fn' points at '.*:not_a_provider', which is the function "
                                            r".*not_a_provider, not a provider of kind 'attention'"):
        reg.get("attention", "fn", {"version": 1})
    reg.register("attention", "ffn_class", f"{__name__}:F")
    with pytest.raises(RegistryError, match="a provider of kind 'ffn', not a provider of kind 'attention'"):
        reg.get_class("attention", "ffn_class")
    with pytest.raises(TypeError, match="not a provider of kind 'attention'"):
        reg.register("attention", "dict", dict)
    with pytest.raises(TypeError, match="a provider of kind 'ffn', not a provider of kind 'router'"):
        reg.register("router", "f", F)
    reg.register("router", "plain", Provider)  # a plain Provider serves any kind (the plugin guide's)
    assert CALLS == []
