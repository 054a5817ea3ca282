"""Reading inputs as document pieces: text files, directories, Hugging Face datasets."""

from __future__ import annotations

import pytest

from apt.data import DataError
from apt.data.corpus import HFCorpus, TextCorpus, open_corpus, split_text


def test_pieces_are_cut_only_between_non_spaces():
    text = "alpha beta\n\ngamma  delta\nepsilon zeta eta theta " * 50
    pieces = list(split_text(text, 40))
    assert "".join(pieces) == text and len(pieces) > 20
    for left, right in zip(pieces, pieces[1:], strict=False):
        assert not right[0].isspace() or (right[0] == " " and not right[1].isspace())
        assert not left[-1].isspace() or (left[-1] == "\n" and not left[-2].isspace())
    assert list(split_text("x" * 100, 10)) == ["x" * 100]  # nowhere to cut: one piece


def test_text_directory_is_sorted_documents_without_hidden_files(text_dir, docs):
    corpus = open_corpus(text_dir)
    assert isinstance(corpus, TextCorpus) and corpus.multi_document
    assert [f.relative_to(text_dir).as_posix() for f in corpus.files] == [
        "doc0.txt", "doc1.txt", "doc2.txt", "sub/doc3.txt"]
    got = list(corpus.pieces())
    assert [text for _, text in got] == docs and all(first for first, _ in got)
    assert corpus.describe()["kind"] == "text-dir"


def test_big_file_is_read_in_pieces_with_line_endings_kept(tmp_path, monkeypatch):
    import apt.data.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "PIECE_CHARS", 64)
    path = tmp_path / "big.txt"
    text = "one line here\r\nanother line\n" * 40
    path.write_bytes(text.encode("utf-8"))
    got = list(open_corpus(path).pieces())
    assert len(got) > 5 and "".join(t for _, t in got) == text
    assert [first for first, _ in got] == [True] + [False] * (len(got) - 1)


def test_bad_inputs_are_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    with pytest.raises(DataError, match="holds no text \\(empty\\)"):
        open_corpus(tmp_path / "empty")
    (tmp_path / "bin.txt").write_bytes(b"ok \xff\xfe bad")
    with pytest.raises(DataError, match="bin.txt' is not UTF-8 text"):
        list(open_corpus(tmp_path / "bin.txt").pieces())
    with pytest.raises(DataError, match="split='x' applies to Hugging Face datasets"):
        open_corpus(tmp_path / "bin.txt", split="x")


def test_hugging_face_datasets_on_local_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the `hf` extra (datasets) is not installed")
    rows = {"text": ["first doc", "", None, "second doc"], "n": [1, 2, 3, 4]}
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    ds.to_json(str(tmp_path / "rows.jsonl"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    for name in ("disk", "dict", "rows.jsonl", "pq"):
        corpus = open_corpus(tmp_path / name)
        assert isinstance(corpus, HFCorpus)
        assert list(corpus.pieces()) == [(True, "first doc"), (True, "second doc")], name
        assert corpus.describe()["skipped_empty_rows"] == 2
    assert list(open_corpus(tmp_path / "dict", split="validation").pieces()) == [(True, "first doc")]
    with pytest.raises(DataError, match="split='test' is not a split of .*; splits: \\['train', 'validation'\\]"):
        open_corpus(tmp_path / "dict", split="test")
    with pytest.raises(DataError, match="text_field='body' is not a column of .*; columns: \\['text', 'n'\\]"):
        open_corpus(tmp_path / "disk", text_field="body")
    with pytest.raises(DataError, match="text_field='n' of .* holds int values, not text"):
        list(open_corpus(tmp_path / "disk", text_field="n").pieces())
