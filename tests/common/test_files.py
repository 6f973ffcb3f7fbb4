"""Atomic writes: all or nothing, and the same permissions a plain write would give."""

import stat

import pytest

from common.files import atomic_path, write_text


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
