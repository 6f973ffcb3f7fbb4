"""One trainer per workdir: an exclusive lock held for the run's life.

    hold(workdir)      # WORKDIR/.train.lock, or WorkdirBusy naming the process that holds it
    release(workdir)   # at the run's end (the kernel releases it anyway when the process dies)

Two trainers in one folder (a second job with the same --workdir, a scheduler's requeue while the
first job still runs) would replace each other's metrics.jsonl and checkpoints and both exit 0.
The lock is `fcntl.flock` on WORKDIR/.train.lock: the kernel drops it when its process exits, a
SIGKILL included, so a killed run leaves no stale lock behind. The file holds who took it (host,
pid, start time, command), for the refusal to name. On NFS, Linux emulates flock with POSIX
byte-range locks (since 2.6.12), which the server arbitrates across clients.

Only the primary host of a multi-host run holds it (the others write no logs). Once held, the
stray temporary files an atomic write killed half-way left in the run's checkpoint folders
(common/files.py: `.<name>.<random>.tmp`) are removed: no other writer can own them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".train.lock"
_HELD: dict[Path, int] = {}  # workdir -> the lock file's descriptor, this process's


class WorkdirBusy(FileExistsError):
    """Another process trains in this workdir."""


def hold(workdir: str | Path) -> None:
    """Take WORKDIR's lock for this process (again: a no-op), or raise WorkdirBusy."""
    workdir = Path(workdir).resolve()
    if workdir in _HELD:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkdirBusy(f"{workdir} is in use by another training run ({holder}): wait for it to end, or pass "
                          "--workdir DIR for this one") from None
    except OSError as error:  # a file system without locks
        os.close(fd)
        raise OSError(error.errno, f"{path}: cannot lock the workdir ({error.strerror}); pass --workdir DIR on a "
                                   "local or lock-capable file system") from None
    os.ftruncate(fd, 0)
    os.write(fd, (f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(sys.argv)}\n").encode())
    _HELD[workdir] = fd
    _remove_stray_temporaries(workdir)


def release(workdir: str | Path) -> None:
    """Let WORKDIR's lock go, if this process holds it."""
    fd = _HELD.pop(Path(workdir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _remove_stray_temporaries(workdir: Path) -> None:
    """Files an atomic write left when its process was killed mid-write, in the checkpoint
    folders: each as large as a checkpoint, and a run preempted again and again piles them up."""
    for folder in (workdir / "checkpoints" / "last", workdir / "checkpoints" / "best"):
        if folder.is_dir():
            for stray in folder.glob(".*.tmp"):
                if stray.is_file():
                    stray.unlink(missing_ok=True)
