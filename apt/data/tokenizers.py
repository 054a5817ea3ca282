"""Text <-> token ids: the tokenizer interface, the built-in char and byte tokenizers, and
the one place that turns a tokenizer *spec* into a tokenizer.

A spec is ``char``, ``byte``, ``bpe`` (a byte-level BPE trained here on the corpus),
a path to a Hugging Face ``tokenizer.json``, or ``tiktoken:<encoding>``; the subword kinds
live in :mod:`apt.data.subword` and are imported only when asked for. Every tokenizer
serialises to a plain dict (``to_dict`` / :func:`tokenizer_from_dict`), so a checkpoint
carries the whole tokenizer and sampling needs no other file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BPE_MIN_VOCAB", "EOT_TEXT", "ByteTokenizer", "CharTokenizer", "IdTokenizer", "Tokenizer",
           "build_tokenizer", "spec_kind", "tokenizer_from_dict"]

#: How an end-of-text id decodes, for every kind that has one (GPT-2's spelling).
EOT_TEXT = "<|endoftext|>"
#: A byte-level BPE needs the 256 byte tokens and the end-of-text token before any merge.
BPE_MIN_VOCAB = 257
SPEC_KINDS = ("char", "byte", "bpe", "<path>/tokenizer.json", "tiktoken:<encoding>")


class Tokenizer:
    """Text <-> token ids. ``vocab_size`` bounds every id; ``eot_id`` separates documents
    (``None`` when the tokenizer has no end-of-text token)."""

    kind: str = ""
    vocab_size: int = 0
    eot_id: int | None = None

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def token_bytes(self) -> np.ndarray | None:
        """``(vocab_size,)``: UTF-8 bytes of original text each id stands for (0: special ids).

        Bits per byte divide a loss summed over tokens by the bytes those tokens cover,
        which makes runs with different tokenizers comparable. None when ids stand for no
        text (synthetic id streams).
        """
        raise NotImplementedError


def _ids_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 65536 else np.uint32


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens (vocab 256): works on any text, same ids on every machine.

    With ``eot=True`` id 256 is an end-of-text token (vocab 257), for corpora of many
    documents; without it the ids are exactly those of earlier APT versions.
    """

    kind = "byte"

    def __init__(self, eot: bool = False) -> None:
        self.eot = bool(eot)
        self.vocab_size = 257 if self.eot else 256
        self.eot_id = 256 if self.eot else None

    def encode(self, text: str) -> np.ndarray:
        # surrogateescape: text read with it from a non-UTF-8 file gives back the file's bytes
        return np.frombuffer(text.encode("utf-8", errors="surrogateescape"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Any) -> str:
        out, run = [], bytearray()
        for i in map(int, ids):
            if i == self.eot_id:
                out.append(run.decode("utf-8", errors="replace") + EOT_TEXT)
                run = bytearray()
            else:
                run.append(i)
        return "".join(out) + run.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "eot": True} if self.eot else {"kind": self.kind}

    def token_bytes(self) -> np.ndarray:
        out = np.ones(self.vocab_size, dtype=np.int64)
        if self.eot_id is not None:
            out[self.eot_id] = 0
        return out


class CharTokenizer(Tokenizer):
    """One token per Unicode character seen in the corpus (sorted, like nanoGPT's char model).

    With ``eot=True`` the id after the last character is an end-of-text token.
    """

    kind = "char"

    def __init__(self, chars: str, eot: bool = False) -> None:
        if not chars:
            raise ValueError("CharTokenizer needs a non-empty character set")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer characters must be unique")
        self.chars = chars
        self.eot = bool(eot)
        self.vocab_size = len(chars) + int(self.eot)
        self.eot_id = len(chars) if self.eot else None
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(self._codepoints)
        self._table = list(chars) + ([EOT_TEXT] if self.eot else [])

    @classmethod
    def fit(cls, texts: str | Iterable[str], eot: bool = False) -> CharTokenizer:
        """The sorted character set of ``texts`` (a string, or pieces of one corpus)."""
        seen: set[str] = set()
        for piece in [texts] if isinstance(texts, str) else texts:
            seen.update(piece)
        return cls("".join(sorted(seen)), eot=eot)

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        pos = np.searchsorted(self._codepoints, cps, sorter=self._order)
        pos = np.minimum(pos, len(self._order) - 1)
        ids = self._order[pos]
        bad = self._codepoints[ids] != cps
        if bad.any():
            missing = sorted({chr(c) for c in cps[bad][:20]})
            raise ValueError(f"characters not in the tokenizer's vocabulary: {missing!r}")
        return ids.astype(_ids_dtype(self.vocab_size))

    def decode(self, ids: Any) -> str:
        return "".join(self._table[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "chars": self.chars}
        return {**out, "eot": True} if self.eot else out

    def token_bytes(self) -> np.ndarray:
        out = np.array([len(c.encode("utf-8")) for c in self.chars] + [0] * int(self.eot), dtype=np.int64)
        return out


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


def spec_kind(spec: str, vocab_size: int | None = None, prefix: str = "") -> str:
    """The kind a tokenizer spec names (``char``, ``byte``, ``bpe``, ``hf``, ``tiktoken``).

    Checks what needs no library and no corpus (torch- and tokenizers-free, for config
    validation): a ``bpe`` spec has a ``vocab_size`` that holds the byte alphabet, a
    ``tokenizer.json`` exists. Raises ``ValueError`` with one readable line otherwise, naming
    the options as ``<prefix>tokenizer`` and ``<prefix>vocab_size``.
    """
    spec, p = str(spec), prefix
    if spec in ("char", "byte"):
        return spec
    if spec == "bpe":
        if vocab_size is None:
            raise ValueError(f"{p}tokenizer=bpe needs {p}vocab_size=N (at least {BPE_MIN_VOCAB})")
        if int(vocab_size) < BPE_MIN_VOCAB:
            raise ValueError(f"{p}vocab_size={vocab_size} is too small for a byte-level BPE: the 256 byte tokens "
                             f"and {EOT_TEXT} need at least {BPE_MIN_VOCAB}")
        return "bpe"
    if spec.startswith("tiktoken:"):
        if not spec.partition(":")[2]:
            raise ValueError(f"{p}tokenizer=tiktoken:<encoding> needs an encoding name, e.g. tiktoken:gpt2")
        return "tiktoken"
    if spec.endswith(".json"):
        if not Path(spec).expanduser().is_file():
            raise ValueError(f"{p}tokenizer={spec!r} is not a readable tokenizer.json file")
        return "hf"
    raise ValueError(f"{p}tokenizer={spec!r} is not one of {list(SPEC_KINDS)}")


def build_tokenizer(spec: str, texts: str | Iterable[str] = (), *, vocab_size: int | None = None,
                    eot: bool = False) -> Tokenizer:
    """The tokenizer a spec names; ``char`` and ``bpe`` are fitted to ``texts`` (read once).

    ``eot=True`` asks char and byte tokenizers for an end-of-text id (the subword kinds
    have theirs in the vocabulary already).
    """
    kind = spec_kind(spec, vocab_size)
    if kind == "byte":
        return ByteTokenizer(eot=eot)
    if kind == "char":
        return CharTokenizer.fit(texts, eot=eot)
    from apt.data import subword

    if kind == "bpe":
        return subword.train_bpe([texts] if isinstance(texts, str) else texts, int(vocab_size or 0))
    if kind == "tiktoken":
        return subword.TiktokenTokenizer(spec.partition(":")[2])
    return subword.HFTokenizer.from_file(Path(spec).expanduser())


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer saved with ``to_dict`` (e.g. from a checkpoint)."""
    kind = data.get("kind")
    if kind == "byte":
        return ByteTokenizer(eot=bool(data.get("eot", False)))
    if kind == "char":
        return CharTokenizer(data["chars"], eot=bool(data.get("eot", False)))
    if kind == "ids":
        return IdTokenizer(int(data["vocab_size"]))
    if kind in ("bpe", "hf", "tiktoken"):
        from apt.data import subword

        if kind == "tiktoken":
            return subword.TiktokenTokenizer(str(data["encoding"]))
        return subword.HFTokenizer(data["json"], kind=kind)
    raise ValueError(f"unknown tokenizer kind {kind!r} in saved tokenizer; "
                     "valid: ['byte', 'char', 'ids', 'bpe', 'hf', 'tiktoken']")
