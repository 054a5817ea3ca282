"""What ``prepare`` reads, as a stream of document pieces: a text file, a directory of text
files, a string, or a Hugging Face dataset on local disk.

Text is read in pieces of about :data:`PIECE_CHARS` characters, never whole. A piece ends
at a line break or a space between two non-space characters: there the pre-tokenizers of
byte-level BPEs (GPT-2, tiktoken, ``bpe``) split anyway, so encoding the pieces gives the
same ids as encoding the whole text (char and byte tokenizers: always the same).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apt.data.errors import DataError

__all__ = ["HF_SUFFIXES", "PIECE_CHARS", "Corpus", "HFCorpus", "StringCorpus", "TextCorpus", "open_corpus",
           "split_text"]

log = logging.getLogger("apt")

PIECE_CHARS = 1 << 20
#: Files ``datasets.load_dataset`` reads locally, by suffix -> its builder.
HF_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}


def _cut(buf: str) -> int:
    """The last index at which ``buf`` may be cut (see the module doc), or 0 for none."""
    for sep, after in (("\n", 1), (" ", 0)):
        i = buf.rfind(sep, 1, len(buf) - 1)
        while i > 0:
            if not buf[i - 1].isspace() and not buf[i + 1].isspace():
                return i + after
            i = buf.rfind(sep, 1, i)
    return 0


def split_text(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut where :func:`_cut` allows."""
    while len(text) > size:
        cut = _cut(text[:size]) or _cut(text[: 4 * size])  # a long line: look further
        if not cut:
            break
        yield text[:cut]
        text = text[cut:]
    if text:
        yield text


class Corpus:
    """Documents as pieces: :meth:`pieces` yields ``(starts_document, text)``, and may be
    called again for a second pass (fitting a tokenizer, then encoding)."""

    multi_document = False
    total_bytes: int | None = None

    def pieces(self) -> Iterator[tuple[bool, str]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class StringCorpus(Corpus):
    """One document held in memory (the stdlib corpus of ``data=stdlib``)."""

    def __init__(self, text: str, name: str) -> None:
        self.text, self.name = text, name
        self.total_bytes = len(text.encode("utf-8"))

    def pieces(self) -> Iterator[tuple[bool, str]]:
        for i, piece in enumerate(split_text(self.text)):
            yield i == 0, piece

    def describe(self) -> dict[str, Any]:
        return {"kind": "string", "name": self.name}


class TextCorpus(Corpus):
    """UTF-8 text files, one document each, read in pieces (line endings kept as they are).

    ``errors="surrogateescape"`` reads any file: bytes that are not UTF-8 become lone
    surrogates, which the byte tokenizer turns back into exactly those bytes.
    """

    def __init__(self, files: list[Path], root: Path, *, errors: str = "strict") -> None:
        self.files, self.root, self.errors = files, root, errors
        self.multi_document = len(files) > 1
        self.total_bytes = sum(f.stat().st_size for f in files)

    def pieces(self) -> Iterator[tuple[bool, str]]:
        for path in self.files:
            first, buf = True, ""
            try:
                with open(path, encoding="utf-8", errors=self.errors, newline="") as f:
                    while block := f.read(PIECE_CHARS):
                        buf += block
                        cut = _cut(buf) if len(buf) >= PIECE_CHARS else 0
                        if cut:
                            yield first, buf[:cut]
                            first, buf = False, buf[cut:]
            except UnicodeDecodeError as exc:
                raise DataError(f"input {str(path)!r} is not UTF-8 text ({exc.reason})") from None
            except OSError as exc:
                raise DataError(f"input {str(path)!r} cannot be read: {exc.strerror or exc}") from None
            if buf:
                yield first, buf

    def describe(self) -> dict[str, Any]:
        kind = "text-file" if self.root.is_file() else "text-dir"
        return {"kind": kind, "input": str(self.root.resolve()), "files": len(self.files),
                "bytes": self.total_bytes}


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


class HFCorpus(Corpus):
    """One column of a Hugging Face dataset on local disk, one document per row.

    ``save_to_disk`` output is memory-mapped (``load_from_disk``); data files (parquet,
    json lines, csv, arrow) are streamed, so nothing is converted or cached. Rows whose
    text is empty or null are skipped (counted in meta.json).
    """

    multi_document = True

    def __init__(self, path: Path, text_field: str, split: str | None) -> None:
        self.path, self.text_field = path, text_field
        self.dataset, self.split = _open_hf(path, split)
        columns = self._columns()
        if text_field not in columns:
            raise DataError(f"text_field={text_field!r} is not a column of {str(path)!r}; columns: {columns}")
        self.skipped = 0

    def _columns(self) -> list[str]:
        names = getattr(self.dataset, "column_names", None)
        if names:
            return list(names)
        try:  # a stream whose schema is known only from its rows
            return list(next(iter(self.dataset)).keys())
        except StopIteration:
            raise DataError(f"input {str(self.path)!r} has no rows") from None

    def pieces(self) -> Iterator[tuple[bool, str]]:
        self.skipped = 0
        rows = self.dataset.select_columns([self.text_field]).iter(batch_size=1000)
        while True:
            try:
                batch = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - arrow/json/csv readers raise their own types
                raise DataError(f"cannot read {str(self.path)!r}: {str(exc).splitlines()[0]}") from None
            for text in batch[self.text_field]:
                if text is None or text == "":
                    self.skipped += 1
                    continue
                if not isinstance(text, str):
                    raise DataError(f"text_field={self.text_field!r} of {str(self.path)!r} holds "
                                    f"{type(text).__name__} values, not text")
                for i, piece in enumerate(split_text(text)):
                    yield i == 0, piece

    def describe(self) -> dict[str, Any]:
        kind = "hf-disk" if _is_saved_dataset(self.path) else "hf-files"
        return {"kind": kind, "input": str(self.path.resolve()), "text_field": self.text_field,
                "split": self.split, "skipped_empty_rows": self.skipped}


def _open_hf(path: Path, split: str | None) -> tuple[Any, str | None]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the input is local: never ask the Hub
    try:
        import datasets
    except ImportError:
        raise DataError(f"input {str(path)!r} is a Hugging Face dataset; reading it needs the datasets "
                        "package: pip install 'apt[hf]'") from None
    datasets.disable_progress_bars()
    try:
        if _is_saved_dataset(path):
            obj = datasets.load_from_disk(str(path))
        elif path.is_file():
            obj = datasets.load_dataset(HF_SUFFIXES[path.suffix], data_files=str(path), streaming=True)
        else:
            obj = datasets.load_dataset(str(path), streaming=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for unreadable input
        raise DataError(f"cannot read {str(path)!r} as a Hugging Face dataset: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split is not None:
            raise DataError(f"split={split!r} given, but {str(path)!r} is a single dataset without splits")
        return obj, None
    names = list(obj.keys())
    if split is None:
        if len(names) == 1:
            split = names[0]
        elif "train" in names:
            split = "train"
            log.info("%s has splits %s: reading 'train' (choose another with split=<name>)", path, names)
        else:
            raise DataError(f"{str(path)!r} has splits {names}; choose one with split=<name>")
    if split not in names:
        raise DataError(f"split={split!r} is not a split of {str(path)!r}; splits: {names}")
    return obj[split], split


def open_corpus(source: str | Path, *, text_field: str = "text", split: str | None = None) -> Corpus:
    """The corpus at ``source``: a Hugging Face dataset (``save_to_disk`` output, or a file or
    directory holding parquet/json/jsonl/csv/arrow files), else UTF-8 text (a file, or every
    non-hidden file under a directory, sorted by path, one document each)."""
    path = Path(str(source)).expanduser()
    if not path.exists():
        raise DataError(f"input={str(source)!r} does not exist")
    if path.is_file():
        if path.suffix in HF_SUFFIXES:
            return HFCorpus(path, text_field, split)
        files = [path]
    elif _is_saved_dataset(path):
        return HFCorpus(path, text_field, split)
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / n for n in filenames if not n.startswith(".")]
        if any(f.suffix in HF_SUFFIXES for f in files):
            return HFCorpus(path, text_field, split)
        files.sort(key=lambda f: f.relative_to(path).as_posix())
    if split is not None:
        raise DataError(f"split={split!r} applies to Hugging Face datasets; {str(source)!r} is text")
    files = [f for f in files if f.stat().st_size > 0]
    if not files:
        raise DataError(f"input={str(source)!r} holds no text (empty)")
    return TextCorpus(files, path)
