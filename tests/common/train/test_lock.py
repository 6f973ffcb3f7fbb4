"""common/train/lock.py: one trainer per workdir, the lock released by the kernel with its process."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.train import lock

ROOT = Path(__file__).resolve().parents[3]
HOLDER = "from common.train.lock import hold; import sys, time; hold(sys.argv[1]); print('held', flush=True); time.sleep(120)"


def test_a_second_process_is_refused_naming_the_holder_until_the_holder_dies(tmp_path):
    """Another process holds the workdir: refused, naming its pid; SIGKILLed, it leaves no stale
    lock (flock dies with its process), and the workdir can be held again."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.WorkdirBusy) as err:
            lock.hold(tmp_path)
        assert str(err.value).startswith(f"{tmp_path.resolve()} is in use by another training run (host ")
        assert f", pid {holder.pid}, since " in str(err.value)
        assert str(err.value).endswith(": wait for it to end, or pass --workdir DIR for this one")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock.hold(tmp_path)
    lock.hold(tmp_path)  # again, by the same process: no second lock to trip over
    assert f"pid {os.getpid()}," in (tmp_path / lock.LOCK_FILE).read_text()
    lock.release(tmp_path)
    lock.release(tmp_path)


def test_holding_removes_what_killed_atomic_writes_left_in_the_checkpoint_folders(tmp_path):
    last = tmp_path / "checkpoints" / "last"
    last.mkdir(parents=True)
    (last / ".step_000008.pt.mnhm5c2m.tmp").write_bytes(b"half a checkpoint")
    (last / "step_000004.pt").write_bytes(b"a checkpoint")
    lock.hold(tmp_path)
    try:
        assert sorted(p.name for p in last.iterdir()) == ["step_000004.pt"]
    finally:
        lock.release(tmp_path)


def test_the_training_command_refuses_a_held_workdir_before_any_data(tmp_path, capsys, monkeypatch):
    from common.train.cli import run

    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("the data was prepared"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    fd = os.open(workdir / lock.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: as another process's
    os.write(fd, b"host h, pid 1234, since 2026-12-07 10:00:00: python -m jaxbrr.train")
    try:
        assert run(["--config", str(ROOT / "configs" / "tiny.yaml"), "--workdir", str(workdir), "--no-progress",
                    f"--set=data.cache_dir={tmp_path / 'cache'}"], "train", "", lambda: pytest.fail("built")) == 2
    finally:
        os.close(fd)
    assert capsys.readouterr().err.strip() == (
        f"error: {workdir.resolve()} is in use by another training run (host h, pid 1234, since 2026-12-07 10:00:00: "
        "python -m jaxbrr.train): wait for it to end, or pass --workdir DIR for this one")
