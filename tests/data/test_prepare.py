"""python -m apt.data.prepare: every tokenizer kind and input kind, workers, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import apt.data.prepare as prepare_mod
from apt.data import load_dataset, open_tokens_dir
from apt.data.prepare import main
from apt.data.subword import train_bpe
from apt.data.tokenizers import EOT_TEXT


def run(capsys, **args):
    code = main([f"{k}={v}" for k, v in args.items()] + ["progress=false"])
    out, err = capsys.readouterr()
    return code, out, err


def stream(out_dir):
    splits, tok, meta = open_tokens_dir(out_dir)
    ids = np.concatenate([np.asarray(splits[s][:]) for s in ("train", "val", "test") if splits[s] is not None])
    return ids, tok, meta


@pytest.fixture
def tokenizer_json(tmp_path, docs):
    path = tmp_path / "given" / "tokenizer.json"
    path.parent.mkdir()
    train_bpe(["".join(docs)], 290).save(path)
    return path


@pytest.mark.parametrize("spec", ["char", "byte", "bpe", "json", "tiktoken"])
def test_every_tokenizer_kind_on_a_directory_of_documents(spec, tmp_path, capsys, text_dir, docs, tokenizer_json,
                                                          request):
    if spec == "tiktoken":
        request.getfixturevalue("local_tiktoken")
    tokenizer = {"json": tokenizer_json, "tiktoken": "tiktoken:apt_test_small"}.get(spec, spec)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, input=text_dir, out=out, tokenizer=tokenizer, vocab_size=300, workers=1,
                            val_fraction=0.2, test_fraction=0.1)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: ") and "4 documents" in stdout
    ids, tok, meta = stream(out)
    assert tok.decode(ids) == EOT_TEXT.join(docs)  # documents in order, one end-of-text id between
    assert int(np.sum(ids == tok.eot_id)) == 3 and ids.max() < meta["vocab_size"]
    total = len(ids)
    assert meta["tokens"] == {"train": total - int(total * 0.2) - int(total * 0.1), "val": int(total * 0.2),
                              "test": int(total * 0.1)}
    assert meta["dtype"] == "uint16" and meta["documents"] == 4 and meta["source"]["kind"] == "text-dir"
    assert (out / "tokenizer.json").is_file() == (spec in ("bpe", "json"))
    if spec == "json":
        assert (out / "tokenizer.json").read_text() == tokenizer_json.read_text()  # used as it is
    assert int(tok.token_bytes()[ids].sum()) == len("".join(docs).encode("utf-8"))  # exact bytes


def test_two_workers_write_the_same_shards_as_one(tmp_path, capsys, text_dir, monkeypatch):
    monkeypatch.setattr(prepare_mod, "TASK_CHARS", 60)  # many small tasks, finished out of order
    for workers in (1, 2):
        code, _, err = run(capsys, input=text_dir, out=tmp_path / f"w{workers}", tokenizer="bpe", vocab_size=280,
                           workers=workers, shard_tokens=50)
        assert code == 0, err
    one, two = stream(tmp_path / "w1"), stream(tmp_path / "w2")
    np.testing.assert_array_equal(one[0], two[0])
    assert one[2]["shards"] == two[2]["shards"] and len(one[2]["shards"]["train"]) > 3


def test_single_text_file_matches_the_data_text_cache(tmp_path, capsys, docs):
    path = tmp_path / "one.txt"
    path.write_text("".join(docs) * 20, encoding="utf-8")
    code, _, err = run(capsys, input=path, out=tmp_path / "out", tokenizer="char")
    assert code == 0, err
    ids, tok, meta = stream(tmp_path / "out")
    assert tok.eot_id is None and meta["documents"] == 1  # one document: no end-of-text id
    cached = load_dataset({"name": "text", "path": str(path), "tokenizer": "char", "cache_dir": str(tmp_path / "c")})
    np.testing.assert_array_equal(np.concatenate([cached.train, cached.val]), ids)


def test_hugging_face_dataset_input(tmp_path, capsys):
    datasets = pytest.importorskip("datasets", reason="the `hf` extra (datasets) is not installed")
    datasets.Dataset.from_dict({"body": ["doc one", "doc two", "", "doc three"] * 5}).save_to_disk(
        str(tmp_path / "ds"))
    code, _, err = run(capsys, input=tmp_path / "ds", out=tmp_path / "out", tokenizer="byte", text_field="body")
    assert code == 0, err
    ids, tok, meta = stream(tmp_path / "out")
    assert tok.vocab_size == 257 and tok.decode(ids) == EOT_TEXT.join(["doc one", "doc two", "doc three"] * 5)
    assert meta["source"]["kind"] == "hf-disk" and meta["source"]["skipped_empty_rows"] == 5


def test_wide_vocabularies_are_written_as_uint32(tmp_path, capsys, local_tiktoken, docs):
    (tmp_path / "a.txt").write_text("".join(docs), encoding="utf-8")
    code, _, err = run(capsys, input=tmp_path / "a.txt", out=tmp_path / "out", tokenizer="tiktoken:apt_test_wide")
    assert code == 0, err
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70001
    assert (tmp_path / "out" / "train-00000.bin").stat().st_size == 4 * meta["tokens"]["train"]


@pytest.mark.parametrize(("args", "message"), [
    ({"input": "{tmp}/none"}, "error: input='{tmp}/none' does not exist"),
    ({"input": "{tmp}/empty.txt"}, "holds no text (empty)"),
    ({"input": "{tmp}/latin1.txt"}, "latin1.txt' is not UTF-8 text"),
    ({"tokenizer": "bpe", "vocab_size": 100}, "vocab_size=100 is too small for a byte-level BPE"),
    ({"tokenizer": "sentencepiece"}, "tokenizer='sentencepiece' is not one of"),
    ({"input": "{tmp}/docs", "tokenizer": "{tmp}/noeot.json"}, "has no end-of-text token"),
    ({"vocab_size": "many"}, "vocab_size='many' must be an integer"),
    ({"colour": "red"}, "unknown option(s) ['colour']"),
    ({"val_fraction": 0.7, "test_fraction": 0.4}, "must be in (0, 1) and [0, 1) with a sum below 1"),
    ({"out": "{tmp}/full"}, "out='{tmp}/full' exists and is not an empty directory"),
])
def test_bad_input_is_one_error_line_and_leaves_nothing(args, message, tmp_path, capsys, text_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers

    (tmp_path / "good.txt").write_text("some good text\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    noeot = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    noeot.pre_tokenizer = pre_tokenizers.ByteLevel()
    noeot.save(str(tmp_path / "noeot.json"))
    full = {"input": "{tmp}/good.txt", "out": "{tmp}/out", "tokenizer": "char", **args}
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, **{k: str(v).format(tmp=tmp_path) for k, v in full.items()})
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out, no temporary directory
    assert (tmp_path / "full" / "keep").is_file()
