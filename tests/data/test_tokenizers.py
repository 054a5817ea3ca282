"""Tokenizer specs, end-of-text ids of the char and byte tokenizers, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from apt.data import ByteTokenizer, CharTokenizer, build_tokenizer, tokenizer_from_dict
from apt.data.tokenizers import EOT_TEXT, spec_kind


@pytest.mark.parametrize(("spec", "vocab", "kind"), [
    ("char", None, "char"), ("byte", None, "byte"), ("bpe", 257, "bpe"), ("tiktoken:gpt2", None, "tiktoken"),
])
def test_spec_kinds(spec, vocab, kind):
    assert spec_kind(spec, vocab) == kind


@pytest.mark.parametrize(("spec", "vocab", "message"), [
    ("bpe", None, "data.tokenizer=bpe needs data.vocab_size=N (at least 257)"),
    ("bpe", 256, "data.vocab_size=256 is too small for a byte-level BPE"),
    ("tiktoken:", None, "needs an encoding name"),
    ("/no/such/tokenizer.json", None, "data.tokenizer='/no/such/tokenizer.json' is not a readable tokenizer.json"),
    ("wordpiece", None, "data.tokenizer='wordpiece' is not one of ['char', 'byte', 'bpe'"),
])
def test_bad_specs_are_one_line(spec, vocab, message):
    with pytest.raises(ValueError) as info:
        spec_kind(spec, vocab, prefix="data.")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_byte_and_char_end_of_text_ids():
    byte = ByteTokenizer(eot=True)
    assert (byte.vocab_size, byte.eot_id) == (257, 256)
    ids = np.concatenate([byte.encode("é a"), [256], byte.encode("b")])
    assert byte.decode(ids) == f"é a{EOT_TEXT}b"
    assert byte.token_bytes().tolist() == [1] * 256 + [0]
    assert ByteTokenizer().to_dict() == {"kind": "byte"}  # old checkpoints and caches read the same
    char = CharTokenizer.fit(["ab", "cé"], eot=True)
    assert (char.chars, char.vocab_size, char.eot_id) == ("abcé", 5, 4)
    assert char.decode([0, 4, 3]) == f"a{EOT_TEXT}é"
    assert char.token_bytes().tolist() == [1, 1, 1, 2, 0]
    for tok in (byte, char, ByteTokenizer(), CharTokenizer.fit("xyz")):
        again = tokenizer_from_dict(tok.to_dict())
        assert (again.vocab_size, again.eot_id) == (tok.vocab_size, tok.eot_id)


def test_build_tokenizer_fits_char_to_pieces_read_once():
    pieces = iter(["hello ", "world"])
    tok = build_tokenizer("char", pieces)
    assert tok.chars == " dehlorw" and tok.eot_id is None
    assert tok.decode(tok.encode("hello world")) == "hello world"
