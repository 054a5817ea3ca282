"""BPE trained here, a given tokenizer.json, and tiktoken encodings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apt.data import build_tokenizer, tokenizer_from_dict
from apt.data.corpus import split_text
from apt.data.subword import HFTokenizer, TiktokenTokenizer, train_bpe
from apt.data.tokenizers import EOT_TEXT


@pytest.fixture
def text(docs):
    return "".join(docs) * 5


def test_bpe_is_deterministic_exact_and_serialisable(text):
    tok = train_bpe([text], 300)
    assert (tok.kind, tok.vocab_size, tok.eot_id) == ("bpe", 300, 0)
    assert train_bpe([text], 300).json_text == tok.json_text
    assert train_bpe(split_text(text, 200), 300).json_text == tok.json_text  # cut pieces: the same merges
    ids = tok.encode(text)
    assert len(ids) < len(text.encode()) // 2 and ids.dtype == np.uint16
    assert tok.decode(ids) == text
    assert tok.decode([*tok.encode("a"), 0]) == f"a{EOT_TEXT}"  # special ids decode visibly
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))  # exact bytes per token
    assert tok.token_bytes()[0] == 0
    state = tok.to_dict()
    assert state["kind"] == "bpe" and json.loads(state["json"])["model"]["type"] == "BPE"
    again = tokenizer_from_dict(state)
    np.testing.assert_array_equal(again.encode(text), ids)


def test_tokenizer_json_is_used_as_it_is(tmp_path, text):
    path = tmp_path / "tokenizer.json"
    train_bpe([text], 280).save(path)
    tok = build_tokenizer(str(path))
    assert isinstance(tok, HFTokenizer) and tok.kind == "hf" and tok.vocab_size == 280
    assert tok.eot_id == 0 and tok.decode(tok.encode(text)) == text
    assert tokenizer_from_dict(tok.to_dict()).to_dict() == {"kind": "hf", "json": path.read_text()}
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json' is not a Hugging Face tokenizer.json"):
        build_tokenizer(str(tmp_path / "bad.json"))


def test_token_bytes_of_sentencepiece_style_and_undefined_schemes(text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sp = Tokenizer(models.BPE(byte_fallback=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    sp.decoder = decoders.Metaspace(prepend_scheme="never")
    sp.train_from_iterator([text], trainers.BpeTrainer(vocab_size=200, special_tokens=["</s>"],
                                                       show_progress=False))
    tok = HFTokenizer(sp.to_str())
    assert tok.eot_id == sp.token_to_id("</s>")
    text = "the cat sat on the mat."
    assert int(tok.token_bytes()[tok.encode(text)].sum()) == len(text.encode())
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator([text], trainers.WordPieceTrainer(vocab_size=100, special_tokens=["[UNK]"],
                                                             show_progress=False))
    with pytest.raises(ValueError, match="byte-level or sentencepiece-style.*'WordPiece'"):
        HFTokenizer(wp.to_str()).token_bytes()


def test_local_tiktoken_encoding(local_tiktoken):
    tok = build_tokenizer("tiktoken:apt_test_small")
    assert (tok.vocab_size, tok.eot_id) == (1001, 1000)
    ids = tok.encode(f"the cat {EOT_TEXT} thinking")
    assert 1000 not in ids.tolist()  # special-token text in a corpus stays text
    assert tok.decode(ids) == f"the cat {EOT_TEXT} thinking" and tok.decode([1000]) == EOT_TEXT
    assert ids.dtype == np.uint16 and tok.token_bytes()[ids].sum() == len(f"the cat {EOT_TEXT} thinking")
    assert tok.token_bytes()[300] == 0 and tok.token_bytes()[1000] == 0  # unassigned, special
    assert tokenizer_from_dict(tok.to_dict()).encode("the cat").tolist() == ids[:2].tolist()
    assert tok.to_dict() == {"kind": "tiktoken", "encoding": "apt_test_small"}
    assert TiktokenTokenizer("apt_test_wide").encode("the").dtype == np.uint32


def test_tiktoken_encoding_that_is_not_local_is_one_clear_error(offline_tiktoken):
    with pytest.raises(ValueError) as info:
        TiktokenTokenizer("gpt2")
    line = str(info.value)
    assert "tiktoken encoding 'gpt2' is not available locally" in line and "TIKTOKEN_CACHE_DIR" in line
    assert "\n" not in line
    with pytest.raises(ValueError, match="unknown tiktoken encoding 'nope'; known: \\["):
        TiktokenTokenizer("nope")
