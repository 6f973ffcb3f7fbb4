"""One trainer per workdir: an exclusive lock held for the run's life.

    hold(workdir)      # WORKDIR/.train.lock, or WorkdirBusy naming the process that holds it
    release(workdir)   # at the run's end (the kernel releases it anyway when the process dies)

Two trainers in one folder (a second job with the same --workdir, a scheduler's requeue while the
first job still runs) would replace each other's metrics.jsonl and checkpoints and both exit 0.
The lock is `fcntl.flock` on WORKDIR/.train.lock: the kernel drops it when its process exits, a
SIGKILL included, so a killed run leaves no stale lock behind. The file holds who took it (host,
pid, start time, command), for the refusal to name. On NFS, Linux emulates flock with POSIX
byte-range locks (since 2.6.12), which the server arbitrates across clients; a client that
crashed may leave its lock with an NFSv3 server, which the refusal says how to clear. A file
system without locks (Lustre mounted without -o flock, NFS without lockd) cannot hold one: the
run goes on unlocked and says so.

Only the primary host of a multi-host run holds it (the others write no logs); common/train/
loop.py has every host stop alike when it is busy. Once held, the stray temporary files an
atomic write killed half-way left in the run's checkpoint folders (common/files.py:
`.<name>.<random>.tmp`, beside torchref's step files and inside jaxbrr's step folders) are
removed: no other writer can own them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".train.lock"
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # flock's errors on a file system without locks
_HELD: dict[Path, int] = {}  # workdir -> the lock file's descriptor, this process's


class WorkdirBusy(FileExistsError):
    """Another process trains in this workdir."""


def hold(workdir: str | Path) -> bool:
    """Take WORKDIR's lock for this process, or raise WorkdirBusy. False where this process held
    it already, or where the file system has no locks (said on stderr): then there is nothing for
    the caller to release."""
    workdir = Path(workdir).resolve()
    if workdir in _HELD:
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    writable = True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file in a shared run folder: flock needs no write access
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkdirBusy(f"{workdir} is in use by another training run ({holder}): wait for it to end, or pass "
                          f"--workdir DIR for this one (if that process is gone, a crashed host's lock on NFS, "
                          f"delete {path})") from None
    except OSError as error:
        os.close(fd)
        if error.errno not in NO_LOCKS:
            raise
        print(f"note: {path}: this file system has no locks ({error.strerror}), so nothing stops a second "
              "trainer in this workdir: make sure none runs there", file=sys.stderr)
        return False
    try:
        if writable:  # else the file keeps naming its last holder
            os.ftruncate(fd, 0)
            os.write(fd, (f"host {socket.gethostname()}, pid {os.getpid()}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n").encode())
        _remove_stray_temporaries(workdir)
    except BaseException:
        os.close(fd)
        raise
    _HELD[workdir] = fd
    return True


def release(workdir: str | Path) -> None:
    """Let WORKDIR's lock go, if this process holds it."""
    fd = _HELD.pop(Path(workdir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _remove_stray_temporaries(workdir: Path) -> None:
    """Files an atomic write left when its process was killed mid-write, in the checkpoint
    folders (torchref's step files) and their step folders (jaxbrr's neutral copy): each as large
    as the weights, and a run preempted again and again piles them up."""
    from common.files import remove_stale_temporaries

    for kind in ("last", "best"):
        folder = workdir / "checkpoints" / kind
        if folder.is_dir():
            for where in [folder, *(p for p in folder.iterdir() if p.is_dir())]:
                remove_stale_temporaries(where, older_than=0.0)
