"""apt.core.files: a file written atomically is all old or all new, with the umask's mode."""

from __future__ import annotations

import os
import stat

import pytest

from apt.core.files import atomic_open, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half a ne")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_new_file_has_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "config.yaml", "a: 1\r\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_bytes() == b"a: 1\r\n"  # written as given, no newline translation


def test_no_space_is_one_error_naming_the_file_and_the_free_space(tmp_path, monkeypatch):
    # ENOSPC while the data is written: the old file stays, the temporary goes, and the
    # error says which file could not be written and how much room its filesystem has
    import errno
    import shutil

    from apt.core.files import NoSpaceError

    path = tmp_path / "summary.csv"
    path.write_text("old\n")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1536))
    with pytest.raises(NoSpaceError) as info, atomic_open(path) as fh:
        fh.write("half a ne")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    (line,) = str(info.value).splitlines()
    assert str(path) in line and "No space left on device" in line and "1.5 KiB free on its filesystem" in line
    assert info.value.errno == errno.ENOSPC and info.value.__suppress_context__
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
