"""Small corpora and a tiktoken encoding that needs no download."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

#: A tiny tiktoken encoding: the 256 bytes, a few merges, <|endoftext|> at 1000 and a
#: special token at 70000 (so its ids need uint32), built by tiktoken's own plugin mechanism.
PLUGIN = textwrap.dedent('''
    PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""

    def _ranks():
        ranks = {bytes([i]): i for i in range(256)}
        for word in (b"th", b"he", b"the", b" the", b"at", b" c", b" cat", b"in", b"ing"):
            ranks[word] = len(ranks)
        return ranks

    def apt_test_small():
        return {"name": "apt_test_small", "pat_str": PAT, "mergeable_ranks": _ranks(),
                "special_tokens": {"<|endoftext|>": 1000}}

    def apt_test_wide():
        return {"name": "apt_test_wide", "pat_str": PAT, "mergeable_ranks": _ranks(),
                "special_tokens": {"<|endoftext|>": 70000}}

    ENCODING_CONSTRUCTORS = {"apt_test_small": apt_test_small, "apt_test_wide": apt_test_wide}
''')

DOCS = [
    "the cat sat on the mat.\nThe dog ate the hat.\n",
    "Ünïcödé text: naïve café, 東京, emoji 🙂 and the end.\n",
    "Short one.",
    "Numbers 12345 and symbols #!$ mixed in with words, thinking and singing.\n" * 3,
]


@pytest.fixture
def docs():
    """Four documents: ASCII, non-ASCII, short, repeated lines."""
    return list(DOCS)


@pytest.fixture
def local_tiktoken(tmp_path_factory, monkeypatch):
    """Registers the ``apt_test_small`` / ``apt_test_wide`` encodings for this test (and its
    spawned workers, which inherit ``sys.path``)."""
    import tiktoken
    import tiktoken.registry as registry

    root = tmp_path_factory.mktemp("tiktoken_plugin")
    (root / "tiktoken_ext").mkdir()
    (root / "tiktoken_ext" / "apt_test_encodings.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    registry._available_plugin_modules.cache_clear()
    monkeypatch.setattr(registry, "ENCODING_CONSTRUCTORS", None)
    yield tiktoken
    registry._available_plugin_modules.cache_clear()
    for name in ("apt_test_small", "apt_test_wide"):
        registry.ENCODINGS.pop(name, None)
    sys.modules.pop("tiktoken_ext.apt_test_encodings", None)


@pytest.fixture
def text_dir(tmp_path):
    """A directory of four text documents (one in a subdirectory) and a hidden file."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (root / ("sub" if i == 3 else ".") / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    (root / ".hidden.txt").write_text("never read", encoding="utf-8")
    return root
