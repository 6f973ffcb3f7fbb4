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
from tests.common.train.stubs import Unbuilt

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
        assert str(err.value).endswith(": wait for it to end, or pass --workdir DIR for this one (if that process "
                                       "is gone, a crashed host's lock on NFS, delete "
                                       f"{tmp_path.resolve() / lock.LOCK_FILE})")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.hold(tmp_path) is True
    assert lock.hold(tmp_path) is False  # again, by the same process: no second lock to trip over
    assert f"pid {os.getpid()}," in (tmp_path / lock.LOCK_FILE).read_text()
    lock.release(tmp_path)
    lock.release(tmp_path)


def test_holding_removes_what_killed_atomic_writes_left_in_the_checkpoint_folders(tmp_path):
    """torchref's step files lie in checkpoints/last; jaxbrr's neutral copy inside a step folder."""
    last, best = tmp_path / "checkpoints" / "last", tmp_path / "checkpoints" / "best" / "12"
    best.mkdir(parents=True)
    last.mkdir(parents=True)
    (last / ".step_000008.pt.mnhm5c2m.tmp").write_bytes(b"half a checkpoint")
    (last / "step_000004.pt").write_bytes(b"a checkpoint")
    (best / ".model.safetensors.x1y2z3.tmp").write_bytes(b"half the weights")
    (best / "model.safetensors").write_bytes(b"the weights")
    lock.hold(tmp_path)
    try:
        assert sorted(p.name for p in last.iterdir()) == ["step_000004.pt"]
        assert sorted(p.name for p in best.iterdir()) == ["model.safetensors"]
    finally:
        lock.release(tmp_path)


class _Host:
    """What Loop._hold_workdir reads of a trainer: its host, workdir and broadcast."""

    _held_here = False

    def __init__(self, workdir, primary: bool, host_0_says: str | None = None):
        self.workdir, self.primary, self.host_0_says = workdir, primary, host_0_says

    def _from_host_0(self, text: str) -> str:
        return text if self.host_0_says is None else self.host_0_says


def test_every_host_of_a_run_stops_when_host_0_finds_the_workdir_busy(tmp_path):
    """Only host 0 holds the lock; the others heard nothing and went on into the first collective,
    to wait there for the coordination timeout."""
    from common.train.loop import Loop

    busy = "busy run is in use by another training run (...)"
    with pytest.raises(lock.WorkdirBusy, match=r"^run is in use by another training run \(\.\.\.\)$"):
        Loop._hold_workdir(_Host(tmp_path / "a", primary=False, host_0_says=busy))
    assert not (tmp_path / "a").exists()  # host 1 takes no lock of its own
    # any other failure of host 0's (a folder it cannot create) stops every host too
    failed = "error [Errno 13] Permission denied: 'run'"
    with pytest.raises(OSError, match=r"^\[Errno 13\] Permission denied: 'run'$") as raised:
        Loop._hold_workdir(_Host(tmp_path / "a", primary=False, host_0_says=failed))
    assert not isinstance(raised.value, lock.WorkdirBusy)
    (tmp_path / "file").write_text("")  # host 0 itself: a workdir under a file cannot be made
    with pytest.raises(OSError):
        Loop._hold_workdir(_Host(tmp_path / "file" / "run", primary=True))
    host_0 = _Host(tmp_path / "b", primary=True)
    Loop._hold_workdir(host_0)
    assert host_0._held_here and (tmp_path / "b" / lock.LOCK_FILE).is_file()
    lock.release(tmp_path / "b")


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
                    f"--set=data.cache_dir={tmp_path / 'cache'}"], "train", "", lambda: Unbuilt) == 2
    finally:
        os.close(fd)
    assert capsys.readouterr().err.strip() == (
        f"error: {workdir.resolve()} is in use by another training run (host h, pid 1234, since 2026-12-07 10:00:00: "
        "python -m jaxbrr.train): wait for it to end, or pass --workdir DIR for this one (if that process is gone, "
        f"a crashed host's lock on NFS, delete {workdir.resolve() / lock.LOCK_FILE})")
