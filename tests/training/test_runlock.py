"""One writer per run directory: a lock with the owner's pid and host, stale ones taken over."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from apt.training.runlock import LOCK_NAME, RunDirLocked, RunLock, lock_problem


def test_a_second_writer_fails_at_once_naming_the_owner(tmp_path):
    with RunLock(tmp_path):
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["host"] == socket.gethostname() and isinstance(record["pid"], int)
        with pytest.raises(RunDirLocked) as info:
            RunLock(tmp_path).acquire()
        (line,) = str(info.value).splitlines()
        assert str(tmp_path) in line and f"pid {record['pid']}" in line and record["host"] in line
        assert lock_problem(tmp_path) == line
    assert not (tmp_path / LOCK_NAME).exists() and lock_problem(tmp_path) is None


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    code = ("import sys, time\nfrom apt.training.runlock import RunLock\n"
            f"RunLock({str(tmp_path)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # its owner is dead (kill -9 leaves the file behind): taken over
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    assert lock_problem(tmp_path) is None
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert f"stale lock of pid {dead}" in caplog.text
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != int(dead)


def test_a_lock_from_another_host_is_not_guessed_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 12345, "host": "elsewhere.example"}))
    problem = lock_problem(tmp_path)
    assert "elsewhere.example" in problem and str(tmp_path / LOCK_NAME) in problem
    with pytest.raises(RunDirLocked, match="elsewhere.example"):
        RunLock(tmp_path).acquire()
