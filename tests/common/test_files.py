"""Atomic writes: all or nothing, and the same permissions a plain write would give; an output
folder proved writable before a command's work."""

import errno
import stat

import pytest

from common.files import UnwritableFolder, atomic_path, check_writable_folder, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_files_get_the_mode_open_gives_not_mkstemps_0600(tmp_path):
    """A checkpoint or cache on a shared cluster must be readable as the user's other files are."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text(tmp_path / "nested" / "atomic.txt", "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_writer_that_creates_the_file_anew_still_gets_that_mode(tmp_path):
    """safetensors' save_file replaces the temporary with a 0600 file of its own: every jaxbrr
    checkpoint's model.safetensors and parity.convert's output were unreadable to the group."""
    import numpy as np

    from common.checkpoints import write_neutral

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_neutral(tmp_path / "w.safetensors", {"w": np.zeros(2, np.float32)}, None, "neutral")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_writable_folder_is_proved_and_nothing_is_left_behind(tmp_path):
    """Missing folders are created to prove it, then removed: a command refused later for another
    reason leaves no empty output folder; a folder that was there stays, without the probe file."""
    nested = tmp_path / "a" / "b" / "c"
    assert check_writable_folder(nested, "--out") == nested
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_writable_folder(tmp_path / "kept", "--out")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []


def test_a_folder_under_a_file_names_the_file(tmp_path):
    """Unwritable for root too (a folder without write permission is not, for root)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    for path in (blocker / "out" / "deeper", blocker):
        with pytest.raises(UnwritableFolder) as info:
            check_writable_folder(path, "--out")
        assert str(info.value) == (f"--out {path}: cannot write there ({blocker} is a file, not a folder); "
                                   "set --out to a folder you can write to")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_read_only_folder_is_refused_naming_the_option_and_the_fix(tmp_path, monkeypatch):
    """A read-only mount (EROFS) simulated: the probe file cannot be created; the folders made
    to reach it are removed again."""
    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("common.files.tempfile.mkstemp", mkstemp)
    with pytest.raises(UnwritableFolder) as info:
        check_writable_folder(tmp_path / "run" / "eval", "workdir", "pass --workdir DIR")
    assert str(info.value) == f"workdir {tmp_path / 'run' / 'eval'}: cannot write there (Read-only file system); pass --workdir DIR"
    assert isinstance(info.value, ValueError)  # every command reports a ValueError as `error: ...`, exit 2
    assert list(tmp_path.iterdir()) == []


_KILLED_WHILE_WRITING = """
import os, signal, sys, time
from common.files import atomic_path, sigterm_exits
with sigterm_exits():
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
"""


def test_sigterm_while_writing_exits_143_leaving_no_temporary(tmp_path):
    """`timeout` or a scheduler's SIGTERM ended predict at once and left `.<stem>.png.*.tmp` in
    --out; under sigterm_exits the write is abandoned as on Ctrl-C."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, str(tmp_path / "a.png")],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and "SIGTERM: stopping" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_only_stale_temporaries_are_removed(tmp_path):
    import os
    import time

    from common.files import STALE_SECONDS, remove_stale_temporaries

    stale, fresh = tmp_path / ".a.png.x1.tmp", tmp_path / ".b.png.x2.tmp"
    for path in (stale, fresh, tmp_path / "c.png"):
        path.write_text("")
    os.utime(stale, (time.time() - STALE_SECONDS - 5,) * 2)
    os.utime(tmp_path / "c.png", (time.time() - STALE_SECONDS - 5,) * 2)
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.png.x2.tmp", "c.png"]
