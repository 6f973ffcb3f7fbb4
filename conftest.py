"""Fixtures shared by tests/ and parity/."""

from pathlib import Path

import pytest

# Real EEG and scorer fixtures live beside the repository, never inside it.
SHARED_DIR = Path(__file__).resolve().parent.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"{SHARED_DIR}/data is absent (real-file fixtures live beside the repo)")
    return SHARED_DIR
