"""Atomic writes: a reader (or a job killed half-way) sees the old file or the new one, never half.

    with atomic_path(path) as tmp:      # tmp lies beside path; renamed onto it if the block succeeds
        torch.save(state, tmp)
    write_text(path, text); write_bytes(path, data); save_figure(fig, path)

The temporary file is created in the target's folder (a rename within one file system is atomic,
os.replace) and removed when the block raises. Every file the project writes for a user goes
through here; folders (NaN dumps, orbax checkpoints) are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import tempfile
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
