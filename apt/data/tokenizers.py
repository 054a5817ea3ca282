"""Character and byte tokenizers.

Both are tiny, exact and reversible, which is what small-scale LM research on raw text
needs: no vocabulary files to download, and a checkpoint can carry the whole tokenizer as a
plain dict (``to_dict`` / :func:`tokenizer_from_dict`) so sampling needs nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ByteTokenizer", "CharTokenizer", "IdTokenizer", "Tokenizer", "build_tokenizer", "tokenizer_from_dict"]


class Tokenizer:
    """Text <-> token ids. ``vocab_size`` bounds every id."""

    kind: str = ""
    vocab_size: int = 0

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def token_bytes(self) -> np.ndarray | None:
        """UTF-8 bytes of the original text each id stands for, shape ``(vocab_size,)``.

        Bits per byte divide a loss by these, so runs with different tokenizers compare.
        None when ids stand for no text (synthetic id streams).
        """
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens (vocab 256): works on any text, same ids on every machine."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def token_bytes(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)


class CharTokenizer(Tokenizer):
    """One token per Unicode character seen in the corpus (sorted, like nanoGPT's char model)."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ValueError("CharTokenizer needs a non-empty character set")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer characters must be unique")
        self.chars = chars
        self.vocab_size = len(chars)
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        order = np.argsort(self._codepoints)
        pos = np.searchsorted(self._codepoints, cps, sorter=order)
        pos = np.minimum(pos, len(order) - 1)
        ids = order[pos]
        bad = self._codepoints[ids] != cps
        if bad.any():
            missing = sorted({chr(c) for c in cps[bad][:20]})
            raise ValueError(f"characters not in the tokenizer's vocabulary: {missing!r}")
        return ids.astype(np.uint16 if self.vocab_size <= 65535 else np.uint32)

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}

    def token_bytes(self) -> np.ndarray:
        return np.array([len(c.encode("utf-8")) for c in self.chars], dtype=np.int64)


def build_tokenizer(kind: str, text: str) -> Tokenizer:
    """A tokenizer of ``kind`` ("char" fits its vocabulary to ``text``)."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.fit(text)
    raise ValueError(f"unknown tokenizer {kind!r}; valid: ['byte', 'char']")


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer saved with ``to_dict`` (e.g. from a checkpoint)."""
    kind = data.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(data["chars"])
    if kind == "ids":
        return IdTokenizer(int(data["vocab_size"]))
    raise ValueError(f"unknown tokenizer kind {kind!r} in saved tokenizer; valid: ['byte', 'char', 'ids']")


class IdTokenizer(Tokenizer):
    """Identity mapping for synthetic tasks whose data are ids already; decodes to ``"3 1 4"``."""

    kind = "ids"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> np.ndarray:
        return np.array([int(t) for t in text.split()], dtype=np.uint16)

    def decode(self, ids: Any) -> str:
        return " ".join(str(int(i)) for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size}

    def token_bytes(self) -> None:
        return None  # ids of a synthetic task stand for no text: no bits per byte

