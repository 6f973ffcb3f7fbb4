"""Atomic writes: a reader (or a job killed half-way) sees the old file or the new one, never half.

    with atomic_path(path) as tmp:      # tmp lies beside path; renamed onto it if the block succeeds
        torch.save(state, tmp)
    write_text(path, text); write_bytes(path, data); save_figure(fig, path)
    check_writable_folder(args.out, "--out")   # before a command's heavy work, not after it
    with sigterm_exits(): ...           # a command that writes files: SIGTERM cleans up as Ctrl-C does

The temporary file is created in the target's folder (a rename within one file system is atomic,
os.replace) and removed when the block raises. Every file the project writes for a user goes
through here; folders (NaN dumps, orbax checkpoints) are written to a temporary name and renamed.
Each command checks the folders it will write into before it reads data or runs a model, so that
a read-only or mistyped output location is one line naming the option, not a traceback at the end.
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _file_mode() -> int:
    """What open() would give a new file under the process's umask (mkstemp's own is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (its folder is created); os.replace onto `path` when the
    block succeeds, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)  # readable by whoever may read the user's other files
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # again: a writer may create the file anew (safetensors' is 0600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure, in the format the suffix names (png when none), then closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.removeprefix(".") or "png")
    finally:
        plt.close(fig)
    return path


# a new folder's check races another's (every host of a fresh multi-host run checks its workdir):
# one may remove the folder between the other's mkdir and its probe; the probe then tries again
PROBES = 3


class UnwritableFolder(ValueError):
    """An output folder that cannot be written; the message names it, the option that set it and the fix."""


def check_writable_folder(path: str | Path, what: str, fix: str | None = None) -> Path:
    """Prove that a file can be created in folder `path` by creating one (permission bits prove
    nothing for root or on a read-only mount), creating the missing folders to do so. What it
    created is removed again: a command refused later for another reason leaves nothing behind,
    and the writers create their folders themselves (atomic_path). `what` is the option or config
    field that set the path (`--out`, `data.cache_dir`); `fix` defaults to setting it elsewhere.

    Raises UnwritableFolder (a ValueError, which every command reports as `error: ...`, exit 2).
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        for attempt in range(PROBES):
            try:
                path.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
                break
            except FileNotFoundError:  # another process's check removed the folder it had made too
                if attempt == PROBES - 1:
                    raise
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UnwritableFolder(f"{what} {path}: cannot write there ({_why(path, err)}); "
                               f"{fix or f'set {what} to a folder you can write to'}") from None
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except FileNotFoundError:  # not created: mkdir failed below it
                continue
            except OSError:  # something else wrote into it meanwhile
                break
    return path


def _why(path: Path, err: OSError) -> str:
    """The error in words; a file where a folder must be is named."""
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        for p in (path, *path.parents):
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a folder"
    return err.strerror or str(err)


STALE_SECONDS = 600  # a temporary file untouched this long belongs to a writer that was killed


def remove_stale_temporaries(folder: Path, older_than: float = STALE_SECONDS, names: tuple[str, ...] = ("*",)) -> int:
    """Delete the half-written files (atomic_path names them `.<name>.*.tmp`) that a killed command
    left, of files matching `names` (a folder that is the user's, not ours, names its own kinds);
    only old ones, so that another process writing the same folder keeps its own (a caller that
    holds the folder alone passes older_than=0). One that cannot go (not a file, not ours to
    delete) is left, as is: a leftover is harmless."""
    now, removed = time.time(), 0
    for tmp in {path for name in names for path in folder.glob(f".{name}.*.tmp")}:
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= older_than:
                tmp.unlink()
                removed += 1
        except OSError:  # finished or removed meanwhile, or not ours to delete
            pass
    return removed


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM (what `timeout`, `kill` and a cluster's scheduler send) raises SystemExit(143) where
    the program is, so that atomic_path removes its temporary file as it does on Ctrl-C; by
    default SIGTERM ends the process at once and leaves `.<name>.*.tmp` behind. The handler
    before is restored after (a test calling a command's main keeps its own)."""
    if threading.current_thread() is not threading.main_thread():  # Python's rule for handlers
        yield
        return

    def handle(number: int, frame) -> None:
        os.write(2, b"\nSIGTERM: stopping; the outputs written so far are whole\n")  # not print: may be inside one
        raise SystemExit(128 + number)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
