"""Fixtures shared by tests/ and parity/."""

import contextlib
import os
from pathlib import Path

import pytest

# `make test` runs two pytest workers on the two cores. torch's OpenMP threads (one per core by
# default) then spin-wait for a core the other worker's XLA holds: torchref's smoke training took
# 14 s alone and 95 s in the suite. One torch thread per worker and per subprocess it starts
# (they inherit the variable; set here, before anything imports torch). A value already set wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Real EEG and scorer fixtures live beside the repository, never inside it.
SHARED_DIR = Path(__file__).resolve().parent.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"{SHARED_DIR}/data is absent (real-file fixtures live beside the repo)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def nedc_sample(shared) -> Path:
    """NEDC nedc_eeg_eval v6.0.0's sample: ref/ and hyp/ .csv_bi files and its printed expected/."""
    path = shared / "data" / "nedc_sample"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@contextlib.contextmanager
def x64_enabled(enabled: bool = True):
    """jax_enable_x64 set for the block and restored afterwards."""
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
    """float64 in JAX for one test, restored afterwards."""
    with x64_enabled():
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    """Runs a test in float32, then in float64 (jax_enable_x64 on for that run only)."""
    with x64_enabled(request.param == "float64"):
        yield request.param
