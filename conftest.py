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

# Compilation is most of the suite's CPU time, and many files compile the same tiny-model programs
# (the twins' parity files, the model and optimiser tests). One persistent XLA cache for the whole
# session, its workers and the subprocesses they start (JAX reads the variable when it is imported;
# it keeps what took longer than jax_persistent_cache_min_compile_time_secs, 1 s): a whole-suite run
# took 21:07 against 23:00 without it, 5 % less CPU (AMD EPYC, two workers; run-to-run noise is
# about a minute). The process that made it removes it (pytest_unconfigure). A value already set wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_XLA_CACHE = tempfile.mkdtemp(prefix="jaxbrr-tests-xla-cache-")
else:
    _OWN_XLA_CACHE = None


# On a GPU the parity tests compare float32 with TF32 off on both sides. mamba_ssm's Triton kernels
# (model.ssm.backend: cuda) call `tl.dot` without a precision, which Triton runs in TF32 for float32
# operands unless TRITON_F32_DEFAULT says otherwise (triton/language/core.py `dot`); torch's
# allow_tf32 switches do not reach it. So every kernel the tests compile is full float32, as
# torchref's trainer runs them with train.tf32 false (torchref/train/loop.py configure_cuda), and
# benchmarks/triton_aot.py compiles them so. Set before any test compiles one: it is part of
# Triton's cache key, and a process keeps the kernels it compiled. A value already set wins.
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")  # torchref/precision.py's TRITON_F32, FULL_FLOAT32


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE is not None:
        import shutil

        shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)

# Each twin installs without the other framework (pyproject.toml's `jax` and `torch` extras). A
# test file that compares with the other twin imports it at the top, and without it would be a
# collection error: it is reported as skipped instead, naming what is missing. Only a framework
# that is not installed, imported where it may be: by a test or harness file, or by its own twin's
# package. The same import from common/, or from the other twin's package, breaks "each twin runs
# without the other" and fails as usual.
OWN_FRAMEWORKS = {
    "torchref": {"torch", "torch_geometric", "mamba_ssm"},
    "jaxbrr": {"jax", "flax", "optax", "orbax"},
    "common": set(),
}
FRAMEWORKS = set().union(*OWN_FRAMEWORKS.values())


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.failed and isinstance(collector, pytest.Module):
        missing = _missing_framework(str(report.longrepr))
        if missing is not None:
            report.outcome = "skipped"
            report.longrepr = (str(collector.path), 0, f"Skipped: needs {missing}, which is not installed "
                                                        "(the file, or a helper it imports, uses the other twin)")
    return report


def _missing_framework(error: str) -> str | None:
    """The framework whose absence failed an import, where that absence is allowed (above)."""
    import importlib.util
    import re

    found = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", error)
    name = found.group(1).split(".")[0] if found else None
    if name not in FRAMEWORKS:
        return None
    frames = re.findall(r"^(\S+?\.py):\d+: in ", error, re.MULTILINE)  # the last is the failing import
    package = Path(frames[-1]).parts[0] if frames else ""
    if package in OWN_FRAMEWORKS and name not in OWN_FRAMEWORKS[package]:
        return None
    try:
        installed = importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses it (tests/test_architecture.py's)
        installed = False
    return None if installed else name


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
