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
- ``tiktoken``: the encoding's byte-level BPE with its merges recovered from the ranks (a
  token's merge is the pair tiktoken's own merging ends with when only lower ranks are
  allowed), its split regex as a pre-tokenizer and its special tokens at their ids.

A byte or char tokenizer's end-of-text id (256 for bytes) is ``<|endoftext|>`` in the
vocabulary, a special token, so Hugging Face decodes it to APT's text and encodes that text
back to the id. :func:`special_tokens` gives the end-of-text (``eos_token``) and the
beginning-of-sequence token that config.json, generation_config.json and
``tokenizer_config.json`` name: lm-eval-harness and ``generate`` need ``eos_token_id``.

``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` (no custom code) and turns off
``clean_up_tokenization_spaces``, which would otherwise rewrite decoded text (" ." -> ".").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt.data.tokenizers import EOT_TEXT

__all__ = ["SpecialTokens", "bytes_to_unicode", "hf_tokenizer_json", "special_tokens", "write_tokenizer"]

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
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = saved.get("kind")
    eot = bool(saved.get("eot", False))
    if kind == "byte":
        vocab = {ch: b for b, ch in bytes_to_unicode().items()}
        tok = Tokenizer(models.BPE(vocab=_with_eot(vocab, eot), merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    elif kind == "char":
        chars = str(saved["chars"])
        tok = Tokenizer(models.BPE(vocab=_with_eot({c: i for i, c in enumerate(chars)}, eot), merges=[]))
        tok.decoder = decoders.Fuse()
        log.info("char tokenizer: a character outside its %d-character vocabulary has no id; APT's "
                 "tokenizer raises, the exported one drops it", len(chars))
    elif kind == "tiktoken":
        return _tiktoken_json(str(saved["encoding"]))
    elif kind == "ids":
        vocab = {str(i): i for i in range(int(saved["vocab_size"]))}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))  # "<unk>" is not in vocab: errors
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(f"tokenizer kind {kind!r} has no Hugging Face form; exportable: byte, char, ids, "
                         "tiktoken, and BPE tokenizers that save their tokenizer.json")
    if eot:  # in the model's vocabulary at APT's id (above), and special: never split, decoded as is
        tok.add_special_tokens([AddedToken(EOT_TEXT, special=True, normalized=False)])
    return tok.to_str()


def _with_eot(vocab: dict[str, int], eot: bool) -> dict[str, int]:
    """``vocab`` and, for a tokenizer with an end-of-text id, ``<|endoftext|>`` at the next id
    (where APT's byte and char tokenizers put it)."""
    return {**vocab, EOT_TEXT: len(vocab)} if eot else vocab


def _tiktoken_json(encoding: str) -> str:
    """A tiktoken encoding as a byte-level BPE ``tokenizer.json`` that gives tiktoken's ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from apt.data.subword import TiktokenTokenizer

    enc = TiktokenTokenizer(encoding)._enc
    try:  # tiktoken keeps these private; they are what its own pickling writes
        ranks: dict[bytes, int] = enc._mergeable_ranks
        pattern: str = enc._pat_str
        specials: dict[str, int] = enc._special_tokens
    except AttributeError as exc:
        raise ValueError(f"this tiktoken version does not expose encoding {encoding!r}'s ranks ({exc})") from None
    to_char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            parts = _merge(token, ranks, below=rank)
            if len(parts) != 2:
                raise ValueError(f"tiktoken encoding {encoding!r}: token {token!r} (id {rank}) is not the merge "
                                 "of two lower-ranked tokens, so no BPE reproduces it")
            merges.append((text(parts[0]), text(parts[1])))
    vocab = {text(t): r for t, r in ranks.items()} | dict(specials)
    # ignore_merges: a pre-token that is a whole vocabulary entry is that token, as in tiktoken
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    try:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    except Exception as exc:  # noqa: BLE001 - the library raises plain Exception
        raise ValueError(f"tiktoken encoding {encoding!r}: its split pattern is not a regex the tokenizers "
                         f"library reads ({str(exc).splitlines()[0]})") from None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, _ in sorted(specials.items(), key=lambda kv: kv[1])])
    return tok.to_str()


def _merge(token: bytes, ranks: Mapping[bytes, int], below: int) -> list[bytes]:
    """tiktoken's byte-pair merging of ``token`` with only the ranks below ``below``."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = below, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], below)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


@dataclass(frozen=True)
class SpecialTokens:
    """The exported model's end-of-text and beginning-of-sequence tokens (text and id)."""

    eos: tuple[str, int] | None = None
    bos: tuple[str, int] | None = None

    def ids(self) -> dict[str, int | None]:
        """``eos_token_id`` / ``bos_token_id`` for config.json and generation_config.json."""
        return {"eos_token_id": self.eos[1] if self.eos else None, "bos_token_id": self.bos[1] if self.bos else None}

    def texts(self) -> dict[str, str]:
        """``eos_token`` / ``bos_token`` for tokenizer_config.json (only those that exist)."""
        return {name: tok[0] for name, tok in (("eos_token", self.eos), ("bos_token", self.bos)) if tok}


def special_tokens(saved: Mapping[str, Any]) -> SpecialTokens:
    """End-of-text and beginning-of-sequence of a tokenizer saved with APT's ``to_dict()``.

    ``eos`` is the tokenizer's end-of-text id; byte/char tokenizers without one (a
    single-document corpus) and ``ids`` have neither token. ``bos`` is the token a
    tokenizer.json's post-processor puts in front of a sequence (Llama's ``<s>``) where it
    has one, otherwise the end-of-text: APT's prepare writes it before every document after
    the first, so it is what starts a document, as in GPT-2's own files (bos = eos =
    ``<|endoftext|>``).
    """
    from apt.data.tokenizers import tokenizer_from_dict

    tokenizer = tokenizer_from_dict(dict(saved))
    eot, json_text = tokenizer.eot_id, saved.get("json")
    if eot is None:
        return SpecialTokens()
    if isinstance(json_text, str):  # the token as the vocabulary spells it, whatever the decoder does
        from tokenizers import Tokenizer

        eos = (Tokenizer.from_str(json_text).id_to_token(int(eot)), int(eot))
        return SpecialTokens(eos=eos, bos=_template_bos(json_text) or eos)
    eos = (tokenizer.decode([eot]), int(eot))
    return SpecialTokens(eos=eos, bos=eos)


def _template_bos(json_text: str) -> tuple[str, int] | None:
    """The special token a tokenizer.json's TemplateProcessing puts first, with its id."""
    post = json.loads(json_text).get("post_processor") or {}
    for proc in post.get("processors", [post]) if post.get("type") == "Sequence" else [post]:
        if proc.get("type") == "TemplateProcessing" and proc.get("single"):
            first = proc["single"][0].get("SpecialToken")
            ids = (proc.get("special_tokens") or {}).get((first or {}).get("id"), {}).get("ids") or []
            if first and len(ids) == 1:
                return first["id"], int(ids[0])
    return None


def write_tokenizer(saved: Mapping[str, Any], out: str | Path, *, model_max_length: int) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (naming the end-of-text as
    ``eos_token``, see :func:`special_tokens`) into ``out``; returns their paths."""
    out = Path(out)
    tok_path, cfg_path = out / "tokenizer.json", out / "tokenizer_config.json"
    tok_path.write_text(hf_tokenizer_json(saved), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "model_max_length": int(model_max_length), **special_tokens(saved).texts()}
    cfg_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return [tok_path, cfg_path]
