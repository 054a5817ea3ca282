"""python -m apt.data.prepare stopped or failing half-way: no temporary output, no orphans, one line.

Each test starts prepare in its own session (so every process it starts can be found in
/proc) through a small wrapper script that cuts the corpus into many small tasks and, when
``APT_TEST_ENCODE_DELAY`` is set, makes each task sleep first: the run is then reliably
mid-encoding, with both workers alive, when the signal arrives. Spawned workers run the
wrapper too (as ``__mp_main__``), so they encode slowly as well. The signal, cleanup and pool
code under test is prepare's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")

WRAPPER = textwrap.dedent("""
    import faulthandler
    import os
    import signal
    import time

    import apt.data.prepare as prepare

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where a run that hangs is (see Prepare.wait)

    DELAY = float(os.environ.get("APT_TEST_ENCODE_DELAY", "0"))
    prepare.TASK_CHARS = int(os.environ.get("APT_TEST_TASK_CHARS", "2000"))  # about a hundred tasks
    _encode = prepare._encode


    def _slow_encode(tok, task):
        time.sleep(DELAY)
        return _encode(tok, task)


    prepare._encode = _slow_encode
    if __name__ == "__main__":
        raise SystemExit(prepare.main())
""")


def _session(sid: int) -> dict[int, int]:
    """Live (not zombie) processes of session ``sid``: pid -> parent pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state not in "ZX":
            found[int(entry)] = int(ppid)
    return found


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(40):
        words = " ".join(f"w{(i * 7919 + j * 104729) % 5003}" for j in range(900))
        (root / f"doc{i:02d}.txt").write_text(f"document {i}: {words}\n", encoding="utf-8")
    (tmp_path / "wrapper.py").write_text(WRAPPER, encoding="utf-8")
    return root


@pytest.fixture
def sessions():
    """Sessions started by a test; whatever is left of them is killed at its end."""
    started: list[int] = []
    yield started
    for sid in started:
        for pid in _session(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return tmp_path / "logs"


class Prepare:
    """``python wrapper.py ...`` in a session of its own; output to files (an orphan holding a
    pipe would keep a reader waiting)."""

    def __init__(self, tmp_path: Path, corpus: Path, out: Path, delay: float, sessions: list[int],
                 max_file_bytes: int | None = None, task_chars: int = 2000) -> None:
        logs = _logs(tmp_path)
        self.stdout, self.stderr = logs / f"{out.name}.out", logs / f"{out.name}.err"
        env = {**os.environ, "PYTHONPATH": str(REPO), "APT_TEST_ENCODE_DELAY": str(delay),
               "APT_TEST_TASK_CHARS": str(task_chars)}
        with self.stdout.open("w") as out_fh, self.stderr.open("w") as err_fh:
            self.proc = subprocess.Popen([sys.executable, str(tmp_path / "wrapper.py"), f"input={corpus}",
                                          f"out={out}", "tokenizer=byte", "workers=2", "progress=false"],
                                         cwd=tmp_path, env=env, stdout=out_fh, stderr=err_fh,
                                         start_new_session=True, preexec_fn=None if max_file_bytes is None else
                                         lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes,) * 2))
        self.pid = self.proc.pid
        sessions.append(self.pid)

    def wait(self) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(2)
            raise AssertionError(f"prepare hangs:\n{self.stderr.read_text()}") from None
        return code, self.stdout.read_text(), self.stderr.read_text()


def _run(tmp_path: Path, corpus: Path, out: Path, sessions: list[int]) -> None:
    code, stdout, stderr = Prepare(tmp_path, corpus, out, 0.0, sessions).wait()
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: ")


def _encoding(run: Prepare, out: Path) -> list[int]:
    """Wait until prepare has written tokens with both workers alive; returns the workers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.stderr.read_text()
        shards = [_size(p) for tmp in out.parent.glob(f".{out.name}.tmp-*") for p in tmp.glob("train-*.bin")]
        workers = [pid for pid, ppid in _session(run.pid).items()
                   if ppid == run.pid and "spawn_main" in _cmdline(pid)]
        if len(workers) == 2 and any(shards):
            return workers
        time.sleep(0.05)
    raise AssertionError("prepare did not start encoding within 60 s")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _left(sid: int, timeout: float = 10.0) -> list[str]:
    """Command lines of the processes of session ``sid`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [_cmdline(pid) for pid in _session(sid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _shards(out: Path) -> dict[str, object]:
    """Every file of a token directory; meta.json without its name, creation time and duration."""
    files: dict[str, object] = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    files["meta.json"] = {k: v for k, v in meta.items() if k not in ("name", "created", "seconds")}
    return files


@pytest.mark.slow  # three runs of prepare each: about 5 s
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_removes_the_partial_output_ends_the_workers_and_a_rerun_completes(signum, tmp_path, corpus,
                                                                                   sessions):
    clean = tmp_path / "clean"
    _run(tmp_path, corpus, clean, sessions)
    out = tmp_path / "out"
    run = Prepare(tmp_path, corpus, out, 0.05, sessions)
    _encoding(run, out)
    if signum == signal.SIGINT:
        os.killpg(run.pid, signum)  # Ctrl-C: the terminal signals the whole process group
    else:
        os.kill(run.pid, signum)  # kill PID: prepare alone
    code, _, stderr = run.wait()
    assert code == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), stderr
    assert signal.Signals(signum).name in lines[0] and str(out) in lines[0]
    assert _left(run.pid) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "corpus", "logs", "wrapper.py"]  # no .tmp
    _run(tmp_path, corpus, out, sessions)
    assert _shards(out) == _shards(clean)


def test_workers_end_when_prepare_is_killed(tmp_path, corpus, sessions):
    out = tmp_path / "out"
    run = Prepare(tmp_path, corpus, out, 0.05, sessions)
    _encoding(run, out)
    os.kill(run.pid, signal.SIGKILL)  # no handler runs: the workers notice their parent is gone
    run.wait()
    assert _left(run.pid) == []


def test_a_worker_that_dies_is_one_error_line(tmp_path, corpus, sessions):
    out = tmp_path / "out"
    run = Prepare(tmp_path, corpus, out, 0.05, sessions)
    workers = _encoding(run, out)
    os.kill(workers[0], signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    code, _, stderr = run.wait()
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], stderr
    assert _left(run.pid) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "logs", "wrapper.py"]


def test_a_full_disk_is_one_error_line(tmp_path, corpus, sessions):
    """Large tasks: workers are often ended while they send a result, which once hung prepare's exit."""
    out = tmp_path / "out"
    run = Prepare(tmp_path, corpus, out, 0.0, sessions, max_file_bytes=50_000,  # ulimit -f: 50 kB files
                  task_chars=60_000)
    code, _, stderr = run.wait()
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: [Errno 27] File too large") and str(out) in lines[0], stderr
    assert _left(run.pid) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "logs", "wrapper.py"]
