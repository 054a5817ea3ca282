"""``python -m apt.export``: transformers loads the result with no custom code, token ids are
equal and logits match APT's within 1e-4 in fp32, for every exportable variant; everything
else is one ``error:`` line naming what cannot be exported.

Checkpoints are built here from APTConfig with every parameter randomised (norm weights and
biases included, so a mapping that drops or misplaces one cannot hide behind the default
init) and saved in the format train.py writes; one test exports a checkpoint train.py made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the export extra is not installed (pip install 'apt[export]')")
pytest.importorskip("safetensors", reason="the export extra is not installed (pip install 'apt[export]')")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from apt.core.config import APTConfig  # noqa: E402
from apt.data.tokenizers import EOT_TEXT, ByteTokenizer, CharTokenizer, IdTokenizer  # noqa: E402
from apt.export import ExportError, export_checkpoint  # noqa: E402
from apt.export.exporter import FORMATS, LOGITS_ATOL, probe_text  # noqa: E402
from apt.export.tokenizer import write_tokenizer  # noqa: E402
from apt.modeling import ModelBuilder  # noqa: E402
from apt.training.checkpoint import CheckpointManager  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
GPT2 = {"position": "learned", "norm": "layernorm", "attention_name": "sdpa", "ffn_name": "mlp"}
LLAMA = {"position": "rope", "norm": "rmsnorm", "attention_name": "sdpa", "ffn_name": "swiglu"}


def make_checkpoint(path: Path, model_cfg: dict, tokenizer=None) -> tuple[Path, torch.nn.Module]:
    tokenizer = tokenizer or ByteTokenizer()
    cfg = APTConfig.from_dict({"d_model": 32, "num_heads": 4, "num_layers": 2, "max_seq_len": 24,
                               "vocab_size": tokenizer.vocab_size, **model_cfg})
    torch.manual_seed(0)
    model = ModelBuilder(cfg).build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    state = {"model": model.state_dict(), "model_config": cfg.to_dict(), "tokenizer": tokenizer.to_dict(),
             "config": {"plugin": {}}, "plugins": {}, "progress": {"step": 7, "epoch": 1}}
    return CheckpointManager(path).save(state, 7), model.eval()


def check_transformers_agree(out: Path, model: torch.nn.Module, tokenizer) -> None:
    hf = AutoModelForCausalLM.from_pretrained(out).float().eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = probe_text(tokenizer.to_dict())
    ids = [int(i) for i in tokenizer.encode(text)]
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode(ids) == tokenizer.decode(ids)
    x = torch.randint(0, model.config.vocab_size, (3, model.config.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(input_ids=x).logits
        assert (ours - theirs).abs().max().item() <= LOGITS_ATOL
        prompt = x[:1, :5]  # greedy decoding with transformers' KV cache = APT's full recompute,
        ours = model.generate(prompt, 8, temperature=0)[0].tolist()
        eos, new = hf.generation_config.eos_token_id, ours[5:]
        if eos in new:  # which stops after the end-of-text, where the tokenizer has one
            ours = ours[:5 + new.index(eos) + 1]
        assert hf.generate(prompt, max_new_tokens=8, do_sample=False)[0].tolist() == ours


VARIANTS = {
    "gpt2": (GPT2, None),
    "gpt2-bias-gelu_tanh-naive": ({**GPT2, "bias": True, "attention_name": "naive", "d_ff": 48,
                                   "ffn_config": {"activation": "gelu_tanh"}}, None),
    "gpt2-relu-char": ({**GPT2, "ffn_config": {"activation": "relu"}, "dropout": 0.1}, CharTokenizer.fit(TEXT)),
    "gpt2-silu-flash-ids": ({**GPT2, "attention_name": "flash", "num_heads": 2, "ffn_config": {"activation": "silu"}},
                            IdTokenizer(20)),
    "llama": (LLAMA, None),
    "llama-bias-base-dff-char": ({**LLAMA, "bias": True, "rope_base": 500.0, "d_ff": 40, "num_heads": 2},
                                 CharTokenizer.fit(TEXT)),
    "llama-naive": ({**LLAMA, "attention_name": "naive"}, None),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_exportable_variants_load_in_transformers_and_match(tmp_path, name):
    model_cfg, tokenizer = VARIANTS[name]
    tokenizer = tokenizer or ByteTokenizer()
    ckpt, model = make_checkpoint(tmp_path / "ckpt", model_cfg, tokenizer)
    written = export_checkpoint(ckpt, tmp_path / "hf")
    assert {p.name for p in written} == {"model.safetensors", "config.json", "generation_config.json",
                                         "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == name.split("-")[0]
    assert config["tie_word_embeddings"] is True
    check_transformers_agree(tmp_path / "hf", model, tokenizer)


@pytest.mark.parametrize("recipe", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_an_untied_head_is_exported_as_its_own_weight(tmp_path, recipe):
    import transformers

    from apt.export.architectures import to_hf

    _, model = make_checkpoint(tmp_path, recipe)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.wte.weight))  # APT ties; a user may not
    hf = to_hf(model)
    assert hf.config["tie_word_embeddings"] is False and hf.state_dict["lm_head.weight"] is model.lm_head.weight
    cls = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM}[hf.architecture]
    config_cls = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig}[hf.architecture]
    theirs = cls(config_cls(**hf.config)).eval()
    missing, unexpected = theirs.load_state_dict(hf.state_dict, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing)
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert (model(x)[0] - theirs(input_ids=x).logits).abs().max().item() <= LOGITS_ATOL


@pytest.mark.parametrize(("model_cfg", "message"), [
    ({**GPT2, "attention_name": "autopoietic"},
     "block 0 attention is AutopoieticAttention (the autopoietic provider's self-perturbation)"),
    ({**GPT2, "ffn_name": "moe", "ffn_config": {"num_experts": 2}},
     "block 0 FFN is MoELayer (mixture of experts"),
    ({**GPT2, "position": "rope"}, "position=rope, norm=LayerNorm, ffn=MLP matches no standard architecture"),
    ({**LLAMA, "position": "learned"}, "position=learned, norm=RMSNorm, ffn=SwiGLU matches no standard"),
])
def test_models_without_a_standard_architecture_are_refused(tmp_path, model_cfg, message):
    ckpt, model = make_checkpoint(tmp_path / "ckpt", model_cfg)
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_checkpoint(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    # format=safetensors still writes the weights and APT's own config
    written = export_checkpoint(ckpt, tmp_path / "st", format="safetensors")
    assert {p.name for p in written} == {"model.safetensors", "apt_config.json", "tokenizer.json",
                                         "tokenizer_config.json"}
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "st" / "model.safetensors")
    meta = json.loads((tmp_path / "st" / "apt_config.json").read_text())
    assert meta["tied"] == [["wte.weight", "lm_head.weight"]]
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert tensors.keys() == expected.keys() and all(torch.equal(tensors[k], v) for k, v in expected.items())
    assert meta["model_config"]["attention_name"] == model_cfg["attention_name"]


def test_a_parameter_a_plugin_attached_is_refused_not_dropped(tmp_path, monkeypatch):
    from apt.export import architectures

    ckpt, model = make_checkpoint(tmp_path / "ckpt", GPT2)
    model.probe = torch.nn.Linear(4, 4)  # e.g. a plugin's head registered on the model
    with pytest.raises(ExportError, match=r"2 tensor\(s\) have no place in gpt2: \['probe.weight', 'probe.bias'\]"):
        architectures.to_hf(model)


def test_bpe_tokenizer_json_from_to_dict_is_written_as_is(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT * 20], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    write_tokenizer({"kind": "bpe", "json": bpe.to_str()}, tmp_path, model_max_length=64)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    ids = bpe.encode(TEXT).ids
    assert hf(TEXT, add_special_tokens=False)["input_ids"] == ids and len(ids) < len(TEXT.encode())
    assert hf.decode(ids) == TEXT == bpe.decode(ids)


# -- end of text ---------------------------------------------------------------------------
def _tiktoken_tokenizer(monkeypatch):
    """A small tiktoken encoding (the 256 bytes, merges of several levels, <|endoftext|> at 300),
    registered in tiktoken's registry for this test: nothing is downloaded."""
    import tiktoken
    from tiktoken import registry

    from apt.data.subword import TiktokenTokenizer

    ranks = {bytes([i]): i for i in range(256)}
    for word in (b"th", b"he", b"the", b" the", b"at", b" c", b" cat", b"in", b"ing", b"ab", b"abc", b"!\n"):
        ranks[word] = len(ranks)
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    enc = tiktoken.Encoding("apt_export_test", pat_str=pattern, mergeable_ranks=ranks,
                            special_tokens={EOT_TEXT: 300})
    monkeypatch.setitem(registry.ENCODINGS, "apt_export_test", enc)
    return TiktokenTokenizer("apt_export_test")


def _hf_tokenizer_with_bos():
    """A Llama-style tokenizer.json: ``<s>`` (id 0) put in front by its post-processor, ``</s>`` (1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from apt.data.subword import HFTokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT * 20], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return HFTokenizer(tok.to_str(), kind="hf")


def eot_tokenizer(kind: str, monkeypatch):
    from apt.data.subword import train_bpe

    if kind == "byte":
        return ByteTokenizer(eot=True)
    if kind == "char":
        return CharTokenizer.fit(TEXT + "abc!", eot=True)
    if kind == "bpe":
        return train_bpe([TEXT * 20], 300)
    if kind == "hf":
        return _hf_tokenizer_with_bos()
    return _tiktoken_tokenizer(monkeypatch)


@pytest.mark.parametrize("kind", ["byte", "char", "bpe", "hf", "tiktoken"])
def test_the_end_of_text_is_the_exported_eos_token(tmp_path, monkeypatch, caplog, kind):
    tokenizer = eot_tokenizer(kind, monkeypatch)
    eot = tokenizer.eot_id
    eos = {"hf": "</s>"}.get(kind, EOT_TEXT)
    bos = 0 if kind == "hf" else eot  # Llama-style: its own <s>; otherwise GPT-2's bos = eos
    ckpt, model = make_checkpoint(tmp_path / "ckpt", GPT2 if kind in ("byte", "tiktoken") else LLAMA, tokenizer)
    caplog.set_level("INFO", logger="apt.export.exporter")
    export_checkpoint(ckpt, tmp_path / "hf")
    out = tmp_path / "hf"
    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"]) == (eot, bos)
    assert (generation["eos_token_id"], generation["bos_token_id"]) == (eot, bos)
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id) == (eos, eot, bos)
    # the end-of-text round-trips: Hugging Face encodes its text to APT's id and decodes APT's ids to APT's text
    text = f"abc{eos}!"
    ids = [*map(int, tokenizer.encode("abc")), eot, *map(int, tokenizer.encode("!"))]
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode(ids) == tokenizer.decode(ids) == text
    # nothing is put in front by default unless the tokenizer.json itself does (the hf kind's template)
    assert tok("abc")["input_ids"] == [0] * (kind == "hf") + [int(i) for i in tokenizer.encode("abc")]
    check_transformers_agree(out, model, tokenizer)
    # the check's figure is the largest difference, in scientific notation (it printed "within 0 of APT's")
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("checked:"))
    figure = message.split("logits match APT's (max |diff| ", 1)[1].split(")")[0]
    assert "e" in figure and 0 <= float(figure) <= LOGITS_ATOL


def test_a_tokenizer_without_end_of_text_is_exported_without_eos_and_says_so(tmp_path, caplog):
    ckpt, _ = make_checkpoint(tmp_path / "ckpt", GPT2, ByteTokenizer())
    export_checkpoint(ckpt, tmp_path / "hf", verify=False)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] is None
    assert "eos_token" not in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert "the byte tokenizer has no end-of-text token: the export names no eos_token_id" in caplog.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_files_follow_the_umask(tmp_path, fmt):
    ckpt, _ = make_checkpoint(tmp_path / "ckpt", GPT2, ByteTokenizer(eot=True))
    old = os.umask(0o027)
    try:
        written = export_checkpoint(ckpt, tmp_path / "out", format=fmt, verify=False)
    finally:
        os.umask(old)
    assert "model.safetensors" in {p.name for p in written}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(0o640) for p in written}


#: Three local tasks, one per kind of request lm-eval makes: choices scored by loglikelihood,
#: generation (stops at the eos token) and rolling perplexity (starts from the bos token).
LM_EVAL_TASKS = {
    "apt_tiny_choice": """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list: [{metric: acc}]
""",
    "apt_tiny_generate": """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{choices[answer]}}"
generation_kwargs: {max_gen_toks: 4, do_sample: false}
metric_list: [{metric: exact_match}]
""",
    "apt_tiny_perplexity": """
output_type: loglikelihood_rolling
doc_to_text: "{{question}}{{choices[answer]}}"
doc_to_target: "{{question}}{{choices[answer]}}"
metric_list: [{metric: word_perplexity}, {metric: bits_per_byte}]
""",
}

LM_EVAL_SCRIPT = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

tasks = TaskManager(include_path=sys.argv[2])
out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={sys.argv[1]},dtype=float32",
                              tasks=sys.argv[3].split(","), task_manager=tasks, device="cpu", batch_size=2)
print("RESULTS " + json.dumps(out["results"]))
"""


@pytest.mark.slow
def test_lm_eval_harness_runs_on_an_export(tmp_path):
    """lm-eval-harness's ``hf`` model runs local tasks offline on an export: it needs the
    export's eos_token_id (without it: ``TypeError: 'None' is not an instance of 'Sequence'``)."""
    pytest.importorskip("lm_eval", reason="lm-eval-harness is not installed (pip install 'apt[eval]')")
    ckpt, _ = make_checkpoint(tmp_path / "ckpt", LLAMA, ByteTokenizer(eot=True))
    export_checkpoint(ckpt, tmp_path / "hf", verify=False)
    docs = [{"question": "The sky is", "choices": [" blue", " loud"], "answer": 0},
            {"question": "2 + 2 =", "choices": [" 4", " 5", " 22"], "answer": 0},
            {"question": "Fire is", "choices": [" hot", " cold"], "answer": 0}]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "tiny.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    for name, body in LM_EVAL_TASKS.items():
        (tasks / f"{name}.yaml").write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs: "
                                            f"{{data_files: {{test: {data}}}}}\ntest_split: test\n{body}",
                                            encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    r = subprocess.run([sys.executable, "-c", LM_EVAL_SCRIPT, str(tmp_path / "hf"), str(tasks), ",".join(LM_EVAL_TASKS)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.split("RESULTS ", 1)[1])
    assert 0.0 <= results["apt_tiny_choice"]["acc,none"] <= 1.0
    assert 0.0 <= results["apt_tiny_generate"]["exact_match,none"] <= 1.0
    assert 0.0 < results["apt_tiny_perplexity"]["bits_per_byte,none"] < float("inf")


@pytest.mark.slow
def test_cli_exports_what_train_py_wrote(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "model=modern", "provider/ffn=swiglu", "model.d_model=32", "model.num_heads=2",
                        "model.num_layers=1", "data=synthetic", "trainer=debug", "trainer.max_steps=3",
                        "trainer.eval_every=3", "trainer.eval_batches=1", "data.num_tokens=4000",
                        f"hydra.run.dir={run}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = run / "checkpoints" / "step-00000003.pt"
    ok = subprocess.run([sys.executable, "-m", "apt.export", f"ckpt={ckpt}", f"out={tmp_path / 'hf'}"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "checked: transformers loads it" in ok.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    bad = subprocess.run([sys.executable, "-m", "apt.export", f"ckpt={ckpt}", "out=x", "fromat=hf"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "error: unknown option(s) ['fromat']" in bad.stderr
