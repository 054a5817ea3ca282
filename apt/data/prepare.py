"""Tokenise a corpus once into memory-mappable shards: ``python -m apt.data.prepare``.

::

    python -m apt.data.prepare input=<source> out=<dir> tokenizer=<spec>
        [vocab_size=N] [val_fraction=0.1] [test_fraction=0] [text_field=text] [split=NAME]
        [workers=N] [shard_tokens=N] [progress=true]

``input`` is a text file, a directory of text files or a Hugging Face dataset on local disk
(:func:`apt.data.corpus.open_corpus`); ``tokenizer`` is ``char``, ``byte``, ``bpe`` (trained
here with ``vocab_size``), a ``tokenizer.json`` path or ``tiktoken:<encoding>``. Documents
are separated by the tokenizer's end-of-text id. The splits are cut from the end of the
whole token stream (test last, val before it), as ``data=text`` always did, so a corpus
whose documents are in time order validates on its newest text. ``out`` receives the
token directory of :mod:`apt.data.tokens`; it is written in a temporary directory beside
``out`` and renamed into place, so a failed run leaves nothing half-written.

Stopping it is safe: SIGINT or SIGTERM removes the temporary directory, ends the worker
processes and exits with ``128 + signal`` (130, 143) after one ``interrupted:`` line, as an
interrupted ``train.py`` does; a failure during the run (a full disk, a worker killed for
memory) is one ``error:`` line and exit status 1. Workers ignore SIGINT (the terminal sends
it to every process of the group; prepare decides) and end by themselves when prepare's
process is gone, so even ``kill -9`` leaves no orphans. The same command then starts over.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from apt.core.errors import ends_in_one_line
from apt.data.corpus import Corpus, open_corpus
from apt.data.errors import DataError
from apt.data.tokenizers import Tokenizer, build_tokenizer, spec_kind, tokenizer_from_dict
from apt.data.tokens import ShardWriter, split_sizes, split_tail, write_meta

__all__ = ["DEFAULTS", "DEFAULT_SHARD_TOKENS", "USAGE", "main", "prepare"]

log = logging.getLogger(__name__)

DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per shard, as nanoGPT's fineweb shards
TASK_CHARS = 4 << 20  # text per worker task
DEFAULTS: dict[str, Any] = {"input": None, "out": None, "tokenizer": None, "vocab_size": None,
                            "val_fraction": 0.1, "test_fraction": 0.0, "text_field": "text", "split": None,
                            "workers": min(8, os.cpu_count() or 1), "shard_tokens": DEFAULT_SHARD_TOKENS,
                            "progress": True}
USAGE = ("usage: python -m apt prepare input=<file|dir|dataset> out=<dir> tokenizer=<char|byte|bpe|"
         "path/tokenizer.json|tiktoken:NAME> [" + " ".join(f"{k}=" for k in list(DEFAULTS)[3:]) + "]\n"
         "  Tokenise a corpus into the token directory that data=tokens data.dir=<dir> trains on.\n"
         "  input: a text file, a directory of text files or a Hugging Face dataset on disk; bpe is\n"
         "  trained here with vocab_size. python -m apt.data.prepare is the same command.")


def prepare(corpus: Corpus, out: str | Path, tokenizer: str, *, vocab_size: int | None = None,
            val_fraction: float = 0.1, test_fraction: float = 0.0, workers: int = 1,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, progress: bool = False, name: str | None = None,
            exist_ok: bool = False) -> dict[str, Any]:
    """Tokenise ``corpus`` into the token directory ``out``; returns its meta.json content.

    ``out`` must not exist or be empty. With ``exist_ok`` (the token cache) an ``out`` that
    another process completed meanwhile is kept and this run's copy dropped.
    """
    try:
        kind = spec_kind(tokenizer, vocab_size)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) and "
                        "[0, 1) with a sum below 1")
    if int(workers) < 1 or int(shard_tokens) < 1:
        raise DataError(f"workers={workers} and shard_tokens={shard_tokens} must be positive integers")
    out = Path(out).expanduser()
    if out.exists() and not exist_ok and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"out={str(out)!r} exists and is not an empty directory; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        t0 = time.perf_counter()
        tok = _fit(corpus, tokenizer, vocab_size, progress)
        if corpus.multi_document and tok.eot_id is None:
            raise DataError(f"tokenizer={tokenizer!r} has no end-of-text token (looked for "
                            "<|endoftext|>, </s>, ...) to separate the documents of the input")
        dtype = "uint16" if tok.vocab_size <= 65536 else "uint32"
        writer = ShardWriter(tmp, "train", dtype, int(shard_tokens))
        documents, n_bytes = 0, 0
        with _bar(progress, corpus.total_bytes, "tokenize") as bar, \
                contextlib.closing(_encode_all(corpus, tok, int(workers))) as encoded:  # closing ends the workers
            for ids, size, docs in encoded:
                writer.write(ids)
                documents, n_bytes = documents + docs, n_bytes + size
                bar.update(size)
                bar.set_postfix(tokens=f"{writer.total:,}", refresh=False)
        total = writer.total
        n_train, n_val, n_test = split_sizes(total, val_fraction, test_fraction)
        if n_train < 1:
            raise DataError(f"the input gives only {total} tokens: too few to split off val_fraction="
                            f"{val_fraction} and test_fraction={test_fraction}")
        shards = split_tail(tmp, writer.close(), dtype, n_val, n_test, int(shard_tokens))
        seconds = time.perf_counter() - t0
        meta = {"name": name or out.name, "dtype": dtype, "tokens": {"train": n_train, "val": n_val, "test": n_test},
                "shards": shards, "tokenizer": str(tokenizer), "tokenizer_kind": kind,
                "source": corpus.describe(), "documents": documents, "bytes": n_bytes,
                "val_fraction": val_fraction, "test_fraction": test_fraction, "shard_tokens": int(shard_tokens),
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "seconds": round(seconds, 3)}
        meta = write_meta(tmp, meta, tok)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the corpus from other users
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            tmp.rename(out)  # atomic: a reader sees the whole directory or none
        except OSError:
            if not (exist_ok and (out / "meta.json").is_file()):
                raise DataError(f"out={str(out)!r} appeared while preparing; nothing was written") from None
        return meta
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            if tmp.exists():
                log.warning("could not remove the temporary directory %s", tmp)


def _bar(progress: bool, total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress, file=sys.stderr,
                dynamic_ncols=True)


def _fit(corpus: Corpus, spec: str, vocab_size: int | None, progress: bool) -> Tokenizer:
    """The tokenizer; ``char`` and ``bpe`` read the corpus once to fit it."""
    def texts() -> Iterator[str]:
        with _bar(progress, corpus.total_bytes, f"fit {spec}") as bar:
            for _, text in corpus.pieces():
                bar.update(len(text.encode("utf-8")))
                yield text

    needs_text = spec in ("char", "bpe")
    try:
        return build_tokenizer(spec, texts() if needs_text else (), vocab_size=vocab_size,
                               eot=corpus.multi_document)
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _tasks(corpus: Corpus) -> Iterator[list[tuple[bool, str]]]:
    """Pieces grouped into tasks of about :data:`TASK_CHARS`; ``True`` marks a piece that an
    end-of-text id precedes (a new document, except the first)."""
    task: list[tuple[bool, str]] = []
    size, first = 0, True
    for starts_doc, text in corpus.pieces():
        task.append((starts_doc and not first, text))
        first, size = False, size + len(text)
        if size >= TASK_CHARS:
            yield task
            task, size = [], 0
    if task:
        yield task


def _encode(tok: Tokenizer, task: list[tuple[bool, str]]) -> tuple[np.ndarray, int, int]:
    """``(ids, utf-8 bytes, documents begun)`` of one task."""
    parts, n_bytes = [], 0
    for eot_before, text in task:
        if eot_before:  # only multi-document corpora, whose tokenizer has an eot_id (checked)
            parts.append(np.array([tok.eot_id], dtype=np.uint32))
        parts.append(tok.encode(text))
        n_bytes += len(text.encode("utf-8", errors="surrogateescape"))  # see TextCorpus
    return np.concatenate(parts).astype(np.uint32), n_bytes, sum(e for e, _ in task)


_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(state: dict[str, Any], parent: int) -> None:
    global _WORKER_TOKENIZER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent ends us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while starting (_signals_held)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="apt-watch-parent", daemon=True).start()
    _WORKER_TOKENIZER = tokenizer_from_dict(state)


def _exit_with_parent(parent: int) -> None:
    """End this worker once ``parent`` is gone (killed before it could end its pool): a worker
    waiting for its next task would otherwise wait forever, holding its memory."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(task: list[tuple[bool, str]]) -> tuple[np.ndarray, int, int]:
    assert _WORKER_TOKENIZER is not None
    return _encode(_WORKER_TOKENIZER, task)


def _encode_all(corpus: Corpus, tok: Tokenizer, workers: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Encoded tasks in corpus order; ``workers > 1`` encodes in that many processes, with at
    most two tasks per worker in flight (memory stays bounded on any corpus size)."""
    tasks = _tasks(corpus)
    first_doc = 1  # the first document has no end-of-text id before it
    if corpus.total_bytes is not None and corpus.total_bytes <= TASK_CHARS:
        workers = 1  # one task: starting processes would cost more than it saves
    if workers == 1:
        for task in tasks:
            ids, size, docs = _encode(tok, task)
            yield ids, size, docs + first_doc
            first_doc = 0
        return
    import multiprocessing

    # spawn: a fork after the BPE trainer's threads ran could deadlock in the Rust library
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(tok.to_dict(), os.getpid()))
    try:
        pending: collections.deque = collections.deque()
        for task in tasks:
            with _signals_held():
                pending.append(pool.submit(_encode_in_worker, task))
            if len(pending) >= 2 * workers:
                ids, size, docs = pending.popleft().result()
                yield ids, size, docs + first_doc
                first_doc = 0
        while pending:
            ids, size, docs = pending.popleft().result()
            yield ids, size, docs + first_doc
            first_doc = 0
    except BaseException:  # an error, an interrupt, or the consumer closed us (GeneratorExit)
        _terminate(pool)
        raise
    pool.shutdown()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    A handler's exception raised inside the executor's own code (between starting a worker
    and recording it, say) would leave a state its shutdown cannot clean up. SIGINT is also
    blocked for the kernel, so a worker started in the block inherits the block: a Ctrl-C
    while it starts up is the parent's to handle (the resource tracker is started so too).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    python_handlers = None not in previous.values()  # None: installed outside Python, cannot be restored
    if python_handlers:
        for sig in previous:
            signal.signal(sig, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if python_handlers:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End the workers now and wait for them; ``shutdown()`` alone would let the tasks in
    flight finish first (seconds of a 4 MB task each).

    Uses the executor's private parts (Python 3.11-3.13 have no ``terminate_workers()``). A
    worker ended while it sends a result leaves half a message in the result pipe; the
    executor's thread would wait for the rest forever, and the interpreter for that thread
    at exit, since this process holds a write end too: closing it ends the wait.
    """
    processes = list((pool._processes or {}).values())
    results = pool._result_queue
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
    if results is not None:
        results._writer.close()


@ends_in_one_line
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``--help`` is the usage (exit 0); one ``error:`` line and exit 2 on bad input, 1 on a
    failure during the run; one ``interrupted:`` line and ``128 + signal`` on SIGINT/SIGTERM."""
    from omegaconf import OmegaConf

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # e.g. which split of a DatasetDict
    usage = USAGE.splitlines()[0]
    try:
        cli = OmegaConf.to_container(OmegaConf.from_cli(argv))
    except Exception as exc:  # noqa: BLE001 - omegaconf's grammar errors
        return _fail(usage, f"cannot parse the arguments: {str(exc).splitlines()[0]}")
    unknown = sorted(set(cli) - set(DEFAULTS))
    if unknown:
        return _fail(usage, f"unknown option(s) {unknown}; valid: {list(DEFAULTS)}")
    args = {**DEFAULTS, **cli}
    missing = [k for k in ("input", "out", "tokenizer") if args[k] in (None, "")]
    if missing:
        return _fail(usage, f"{', '.join(f'{k}=' for k in missing)} required")
    for key in ("vocab_size", "workers", "shard_tokens"):
        if args[key] is not None and (not isinstance(args[key], int) or isinstance(args[key], bool)):
            return _fail(usage, f"{key}={args[key]!r} must be an integer")
    for key in ("val_fraction", "test_fraction"):
        if not isinstance(args[key], int | float) or isinstance(args[key], bool):
            return _fail(usage, f"{key}={args[key]!r} must be a number")
    t0 = time.perf_counter()
    try:
        with _signals_interrupt():
            corpus = open_corpus(args["input"], text_field=str(args["text_field"]),
                                 split=None if args["split"] is None else str(args["split"]))
            meta = prepare(corpus, args["out"], str(args["tokenizer"]), vocab_size=args["vocab_size"],
                           val_fraction=float(args["val_fraction"]), test_fraction=float(args["test_fraction"]),
                           workers=args["workers"], shard_tokens=args["shard_tokens"],
                           progress=bool(args["progress"]))
    except DataError as exc:
        return _fail(None, str(exc))
    except _Interrupted as exc:
        print(f"interrupted: {signal.Signals(exc.signum).name}; {_left(str(args['out']))}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenProcessPool:
        print(f"error: a worker process ended abruptly (killed, out of memory?); {_left(str(args['out']))}",
              file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a full disk
        print(f"error: {exc}; {_left(str(args['out']))}", file=sys.stderr)
        return 1
    total = sum(meta["tokens"].values())
    seconds = time.perf_counter() - t0
    print(f"wrote {args['out']}: {meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val / "
          f"{meta['tokens']['test']:,} test tokens ({meta['dtype']}, vocab {meta['vocab_size']}, "
          f"{meta['documents']:,} documents) in {seconds:.1f}s, {total / max(seconds, 1e-9):,.0f} tokens/s")
    return 0


class _Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the main thread is, so every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Interrupted`; later ones are ignored while the
    cleanup runs (removing a directory and ending the workers takes well under a second)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _left(out: str) -> str:
    """What a stopped run left: nothing but a complete ``out`` (stopped after the rename)."""
    if (Path(out).expanduser() / "meta.json").is_file():
        return f"out={out!r} was already complete"
    return f"nothing written to out={out!r} (temporary files removed, workers ended); run the same command again"


def _fail(usage: str | None, message: str) -> int:
    if usage:
        print(usage, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
