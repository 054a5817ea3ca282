"""Subword tokenizers from other libraries: Hugging Face ``tokenizers`` and ``tiktoken``.

- :func:`train_bpe` trains a GPT-2-style byte-level BPE on a corpus (kind ``bpe``);
- :class:`HFTokenizer` wraps any ``tokenizer.json`` (kind ``hf``) and the trained BPE;
- :class:`TiktokenTokenizer` wraps a tiktoken encoding that is available locally.

Both serialise to plain dicts (the whole ``tokenizer.json`` text under ``"json"``, or the
tiktoken encoding's name) so checkpoints carry them. Imported only when a spec asks for
one of these kinds, so ``import apt`` and config checks never load the libraries.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from apt.data.tokenizers import EOT_TEXT, Tokenizer

__all__ = ["EOT_CANDIDATES", "HFTokenizer", "TiktokenTokenizer", "train_bpe"]

log = logging.getLogger("apt")

#: End-of-text tokens looked for in a given tokenizer.json, in this order.
EOT_CANDIDATES = (EOT_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _ids(ids: list[int], vocab_size: int) -> np.ndarray:
    return np.asarray(ids, dtype=np.uint16 if vocab_size <= 65536 else np.uint32)


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer, kept as its ``tokenizer.json`` text.

    Texts are encoded without the tokenizer's own special-token template (no BOS/EOS
    added per call): documents are separated by APT with :attr:`eot_id`.
    """

    def __init__(self, json_text: str, kind: str = "hf") -> None:
        from tokenizers import Tokenizer as _HF

        try:
            self._tok = _HF.from_str(json_text)
        except Exception as exc:  # noqa: BLE001 - the library raises plain Exception
            raise ValueError(f"not a Hugging Face tokenizer.json: {str(exc).splitlines()[0]}") from None
        self.kind = kind
        self.json_text = json_text
        vocab = self._tok.get_vocab(with_added_tokens=True)
        if not vocab:
            raise ValueError("not a usable tokenizer.json: its vocabulary is empty")
        self.vocab_size = max(vocab.values()) + 1
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        names = (EOT_TEXT,) if kind == "bpe" else EOT_CANDIDATES
        self.eot_id = next((vocab[n] for n in names if n in vocab and n in special), None)

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenizer:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read tokenizer file {str(path)!r}: {exc}") from None
        try:
            return cls(text, kind="hf")
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is {exc}") from None

    def encode(self, text: str) -> np.ndarray:
        return _ids(self._tok.encode(text, add_special_tokens=False).ids, self.vocab_size)

    def decode(self, ids: Any) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self.json_text}

    def save(self, path: str | Path) -> None:
        """Write the ``tokenizer.json`` (usable by ``tokenizers`` and ``transformers`` as is)."""
        Path(path).write_text(self.json_text, encoding="utf-8")

    def token_bytes(self) -> np.ndarray:
        """Exact for byte-level vocabularies (GPT-2 style: each character of a token is one
        byte); for sentencepiece-style ones ``▁`` counts as the space it stands for and
        ``<0xNN>`` as one byte. Other schemes (WordPiece, ...) drop text that no token
        covers, so bytes per token are not defined: ``ValueError``."""
        spec = json.loads(self.json_text)
        style = _decoder_style(spec.get("decoder"))
        if style is None:
            raise ValueError("bits per byte need a byte-level or sentencepiece-style tokenizer.json; "
                             f"this one decodes with {(spec.get('decoder') or {}).get('type')!r}")
        out = np.zeros(self.vocab_size, dtype=np.int64)
        added = self._tok.get_added_tokens_decoder()
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            if i in added:
                out[i] = 0 if added[i].special else len(token.encode("utf-8"))
            elif style == "bytelevel":
                out[i] = len(token)
            else:
                out[i] = 1 if _BYTE_FALLBACK.match(token) else len(token.replace("\u2581", " ").encode("utf-8"))
        return out


def _decoder_style(decoder: dict[str, Any] | None) -> str | None:
    """``bytelevel``, ``sentencepiece`` or None for a tokenizer.json ``decoder`` entry."""
    if not decoder:
        return None
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    types = {p.get("type") for p in parts}
    if "ByteLevel" in types:
        return "bytelevel"
    if "Metaspace" in types or any(p.get("type") == "Replace" and "\u2581" in json.dumps(p.get("pattern"))
                                   for p in parts):
        return "sentencepiece"
    return None


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A GPT-2-style byte-level BPE with ``<|endoftext|>`` (id 0), trained on ``texts``.

    Deterministic for a given corpus. A corpus too small to fill ``vocab_size`` gives a
    smaller vocabulary, with a warning.
    """
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[EOT_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    out = HFTokenizer(tok.to_str(), kind="bpe")
    if out.vocab_size < vocab_size:
        log.warning("trained BPE has %d tokens, fewer than vocab_size=%d: the corpus has no more pairs "
                    "to merge", out.vocab_size, vocab_size)
    return out


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding (``tiktoken:gpt2``), loaded from tiktoken's local cache.

    tiktoken downloads encodings on first use and keeps them in ``$TIKTOKEN_CACHE_DIR``;
    without network an encoding not cached there is a ``ValueError`` saying so.
    """

    kind = "tiktoken"

    def __init__(self, encoding: str) -> None:
        try:
            import tiktoken
        except ImportError:
            raise ValueError(f"tokenizer=tiktoken:{encoding} needs the tiktoken package "
                             "(pip install tiktoken)") from None
        try:
            self._enc = tiktoken.get_encoding(encoding)
        except (OSError, ValueError) as exc:
            known = tiktoken.list_encoding_names()
            if encoding not in known:
                raise ValueError(f"unknown tiktoken encoding {encoding!r}; known: {known}") from None
            reason = str(exc).splitlines()[0][:160]
            raise ValueError(
                f"tiktoken encoding {encoding!r} is not available locally and cannot be fetched ({reason}); "
                f"on a machine with network run TIKTOKEN_CACHE_DIR=<dir> python -c \"import tiktoken; "
                f"tiktoken.get_encoding('{encoding}')\", copy <dir> here and set TIKTOKEN_CACHE_DIR") from None
        self.encoding = encoding
        self.vocab_size = int(self._enc.n_vocab)
        specials = self._enc.special_tokens_set
        self._special_ids = {self._enc.encode_single_token(t) for t in specials}
        self.eot_id = self._enc.encode_single_token(EOT_TEXT) if EOT_TEXT in specials else None

    def encode(self, text: str) -> np.ndarray:
        return _ids(self._enc.encode_ordinary(text), self.vocab_size)  # special-token text stays text

    def decode(self, ids: Any) -> str:
        return self._enc.decode([int(i) for i in ids])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoding": self.encoding}

    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if i not in self._special_ids:
                try:
                    out[i] = len(self._enc.decode_single_token_bytes(i))
                except KeyError:  # an unassigned id in the encoding's range
                    out[i] = 0
        return out
