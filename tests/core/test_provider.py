"""Provider bases: defaults that tolerate guide-style subclasses."""

import pytest

from apt.core import AttentionProvider, FFNProvider, Provider, RouterProvider


def test_defaults():
    class Mine(Provider):
        """Does things.

        More text."""

    p = Mine({"a": 1})
    assert p.config == {"a": 1} and Mine().config == {}
    assert (p.get_name(), p.get_version(), p.get_description()) == ("Mine", "0.0.0", "Does things.")
    assert p.validate_config({}) is True and "a" in repr(p)


def test_subclass_without_super_init_still_reprs():
    class Guide(Provider):
        def __init__(self, config):
            pass

    assert "config={}" in repr(Guide({}))


@pytest.mark.parametrize("cls, call", [
    (AttentionProvider, lambda p: p.create_layer(8, 2)),
    (FFNProvider, lambda p: p.create_layer(8, 32)),
    (RouterProvider, lambda p: p.create_router(8, 4)),
])
def test_abstract_factories_name_the_class(cls, call):
    sub = type("Half" + cls.__name__, (cls,), {})
    with pytest.raises(NotImplementedError, match="Half.*must implement"):
        call(sub())
    assert sub.kind in ("attention", "ffn", "router")
