"""Write a checkpoint as a Hugging Face model directory, checked against APT before it is kept.

``format=hf`` writes ``model.safetensors``, ``config.json`` (GPT-2 or Llama, see
:mod:`apt.export.architectures`), ``generation_config.json``, ``tokenizer.json`` and
``tokenizer_config.json``, loadable with ``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained(out)`` and no custom code. The tokenizer's end-of-text is
``eos_token``/``eos_token_id`` in all of them (see :func:`apt.export.tokenizer.special_tokens`).
``format=safetensors`` writes the weights under APT's own names with ``apt_config.json``
(model config, tokenizer, run config): it works for every model, MoE and autopoietic ones
included, but only APT can rebuild it.

The files are written to a scratch directory beside ``out`` and moved into ``out`` only after
the check (``verify``, on by default for ``hf``): transformers loads them, its logits equal
APT's within :data:`LOGITS_ATOL` in fp32 on probe sequences, and its tokenizer gives APT's ids,
decodes them (end-of-text included) to APT's text and names APT's end-of-text id as its
``eos_token_id``. A failed check leaves ``out`` untouched. The files get the permissions
any file written here would (``0o666`` less the umask), not the scratch files' own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from apt.export.architectures import ExportError, HFModel, to_hf
from apt.export.tokenizer import SpecialTokens, special_tokens, write_tokenizer

__all__ = ["FORMATS", "LOGITS_ATOL", "export_checkpoint", "probe_text"]

log = logging.getLogger(__name__)

FORMATS = ("hf", "safetensors")
LOGITS_ATOL = 1e-4
_HF_CLASSES = {"gpt2": ("GPT2Config", "GPT2LMHeadModel"), "llama": ("LlamaConfig", "LlamaForCausalLM")}
_EXTRA_HINT = "pip install 'apt[export]'"


def export_checkpoint(ckpt: str | Path, out: str | Path, *, format: str = "hf", verify: bool = True) -> list[Path]:
    """Export ``ckpt`` into the directory ``out``; returns the files written there.

    Raises :class:`ExportError` (one readable line) when the model or tokenizer has no
    standard form, a package is missing, or the check fails; CheckpointError for a bad file.
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not one of {list(FORMATS)}")
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(f"export needs safetensors: {_EXTRA_HINT}") from None
    from apt.sample import load_model

    model, tokenizer, state = load_model(str(ckpt), "cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        scratch = Path(tmp)
        if format == "hf":
            hf = to_hf(model)
            specials = _special_tokens(state["tokenizer"])
            hf.config.update(specials.ids())
            save_file({k: v.detach().contiguous() for k, v in hf.state_dict.items()},
                      str(scratch / "model.safetensors"), metadata={"format": "pt"})
            _hf_config(hf).save_pretrained(scratch)
            _generation_config(specials).save_pretrained(scratch)
            _write_tokenizer(state["tokenizer"], scratch, model.config.max_seq_len)
            if verify:
                _verify(model, tokenizer, state["tokenizer"], specials, scratch)
            log.info("exported %s as %s (%d layers, vocab %d)", ckpt, hf.architecture,
                     model.config.num_layers, model.config.vocab_size)
        else:
            _write_apt_safetensors(model, state, scratch, save_file)
            try:
                _write_tokenizer(state["tokenizer"], scratch, model.config.max_seq_len)
            except ExportError as exc:
                log.info("no tokenizer.json: %s (apt_config.json holds APT's tokenizer)", exc)
        out.mkdir(parents=True, exist_ok=True)
        written, mode = [], 0o666 & ~_umask()
        for path in sorted(scratch.iterdir()):
            path.chmod(mode)  # safetensors writes 0600 (a temp file renamed), the others follow the umask
            shutil.move(str(path), out / path.name)
            written.append(out / path.name)
    return written


# -- writing ---------------------------------------------------------------------------------
def _hf_config(hf: HFModel) -> Any:
    try:
        import transformers
    except ImportError:
        raise ExportError(f"format=hf needs transformers: {_EXTRA_HINT}") from None
    config_cls, model_cls = _HF_CLASSES[hf.architecture]
    return getattr(transformers, config_cls)(**hf.config, architectures=[model_cls])


def _umask() -> int:
    """The process's umask: from /proc where there is one, else set and put back at once
    (which another thread creating a file in between would see)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _special_tokens(saved: Mapping[str, Any]) -> SpecialTokens:
    try:
        specials = special_tokens(saved)
    except ImportError:
        raise ExportError(f"tokenizer.json needs the tokenizers package: {_EXTRA_HINT}") from None
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if specials.eos is None:
        log.warning("the %s tokenizer has no end-of-text token: the export names no eos_token_id, so generate "
                    "stops only at max_new_tokens and lm-eval-harness cannot run (byte and char tokenizers have "
                    "one when the training data has several documents, e.g. a directory of files)",
                    saved.get("kind"))
    return specials


def _generation_config(specials: SpecialTokens) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(**specials.ids())


def _write_tokenizer(saved: Mapping[str, Any], out: Path, max_len: int) -> None:
    try:
        write_tokenizer(saved, out, model_max_length=max_len)
    except ImportError:
        raise ExportError(f"tokenizer.json needs the tokenizers package: {_EXTRA_HINT}") from None
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def _write_apt_safetensors(model: torch.nn.Module, state: Mapping[str, Any], out: Path, save_file: Any) -> None:
    """APT's own parameter names; a tied weight is stored once and listed in ``tied``."""
    tensors: dict[str, torch.Tensor] = {}
    tied: list[list[str]] = []
    seen: dict[int, str] = {}
    for name, t in model.state_dict(keep_vars=False).items():
        key = t.untyped_storage().data_ptr()
        if key in seen:
            tied.append([seen[key], name])
            continue
        seen[key] = name
        tensors[name] = t.detach().contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "apt"})
    meta = {"format": "apt", "step": state["progress"]["step"], "tied": tied,
            "model_config": state["model_config"], "tokenizer": state["tokenizer"],
            "config": state.get("config", {})}
    (out / "apt_config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


# -- checking --------------------------------------------------------------------------------
def probe_text(saved: Mapping[str, Any]) -> str:
    """Text that exercises a tokenizer: every character of a char vocabulary, every id of an
    id vocabulary, otherwise ASCII, multi-byte UTF-8, whitespace runs and punctuation."""
    kind = saved.get("kind")
    if kind == "char":
        return str(saved["chars"])
    if kind == "ids":
        return " ".join(str(i) for i in range(int(saved["vocab_size"])))
    return "ROMEO: But soft, what light through yonder window breaks?\n\tÀ bientôt — 東京 ≥ 3.14 😀  end."


@torch.no_grad()
def _verify(model: torch.nn.Module, tokenizer: Any, saved: Mapping[str, Any], specials: SpecialTokens,
            out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(out).float().eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = probe_text(saved)
    ids = [int(i) for i in tokenizer.encode(text)]
    hf_ids = list(hf_tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    if hf_ids != ids:
        first = next((i for i, (a, b) in enumerate(zip(ids, hf_ids, strict=False)) if a != b), min(len(ids), len(hf_ids)))
        raise ExportError(f"check failed: the exported tokenizer's ids differ from APT's at token {first}")
    eos = [specials.eos[1]] if specials.eos else []
    if hf_tok.decode(ids + eos + ids) != tokenizer.decode(ids + eos + ids):
        raise ExportError("check failed: the exported tokenizer decodes to other text than APT's")
    if specials.eos:
        eos_text, eos_id = specials.eos
        got = (hf_tok.eos_token_id, hf_model.config.eos_token_id, hf_model.generation_config.eos_token_id,
               list(hf_tok(eos_text, add_special_tokens=False)["input_ids"]))
        if got != (eos_id, eos_id, eos_id, [eos_id]):
            raise ExportError(f"check failed: the end-of-text {eos_text!r} is id {eos_id} in APT, but the export's "
                              "tokenizer, config and generation config name (eos id, eos id, eos id, its "
                              f"encoding) {got}")
    T = model.config.max_seq_len
    gen = torch.Generator().manual_seed(0)
    batches = [torch.tensor([ids[:T]]), torch.randint(0, model.config.vocab_size, (2, T), generator=gen)]
    worst = 0.0
    for x in batches:  # (B, T)
        ours, _ = model(x)
        theirs = hf_model(input_ids=x).logits
        worst = max(worst, float((ours.float() - theirs.float()).abs().max()))
    if not worst <= LOGITS_ATOL:
        raise ExportError(f"check failed: transformers' logits differ from APT's by up to {worst:.3g} "
                          f"(> {LOGITS_ATOL}); nothing was written")
    log.info("checked: transformers loads it, logits match APT's (max |diff| %.1e), tokenizer ids equal", worst)
