"""APT's tokenizers as a Hugging Face ``tokenizer.json`` that gives the same token ids.

- ``byte``: byte-level BPE with the 256 single-byte tokens and no merges, so id = byte value
  (the ByteLevel pre-tokenizer maps bytes to GPT-2's printable characters; no regex split,
  no prefix space) and a ByteLevel decoder.
- ``char``: a BPE model whose vocabulary is APT's characters and which has no merges, so
  every character is its own token (id = its index in APT's sorted character set), and a
  Fuse decoder that joins them without spaces. A character outside that set has no id:
  APT's tokenizer raises, the exported one drops it (Hugging Face has no "refuse" mode and
  no spare id for an unknown token); the export says so.
- ``ids`` (synthetic data, text ``"3 1 4"``): a word-level vocabulary ``"0"..."V-1"`` split on
  whitespace; an unknown word is an error, as in APT.
- BPE tokenizers built with the ``tokenizers`` library save their whole ``tokenizer.json``
  as the string under ``"json"`` in ``to_dict()``; it is written as is.

``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` (no custom code) and turns off
``clean_up_tokenization_spaces``, which would otherwise rewrite decoded text (" ." -> ".").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["bytes_to_unicode", "hf_tokenizer_json", "write_tokenizer"]

log = logging.getLogger(__name__)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer emits)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def hf_tokenizer_json(saved: Mapping[str, Any]) -> str:
    """``tokenizer.json`` text for a tokenizer saved with APT's ``to_dict()``."""
    if isinstance(saved.get("json"), str):  # BPE: the tokenizers library's own serialisation
        return saved["json"]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    kind = saved.get("kind")
    if kind == "byte":
        vocab = {ch: b for b, ch in bytes_to_unicode().items()}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    elif kind == "char":
        chars = str(saved["chars"])
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
        tok.decoder = decoders.Fuse()
        log.info("char tokenizer: a character outside its %d-character vocabulary has no id; APT's "
                 "tokenizer raises, the exported one drops it", len(chars))
    elif kind == "ids":
        vocab = {str(i): i for i in range(int(saved["vocab_size"]))}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))  # "<unk>" is not in vocab: errors
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(f"tokenizer kind {kind!r} has no Hugging Face form; exportable: byte, char, ids, "
                         "and BPE tokenizers that save their tokenizer.json")
    return tok.to_str()


def write_tokenizer(saved: Mapping[str, Any], out: str | Path, *, model_max_length: int) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out``; returns their paths."""
    out = Path(out)
    tok_path, cfg_path = out / "tokenizer.json", out / "tokenizer_config.json"
    tok_path.write_text(hf_tokenizer_json(saved), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "model_max_length": int(model_max_length)}
    cfg_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return [tok_path, cfg_path]
