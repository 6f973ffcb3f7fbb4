"""Fixtures shared by the parity tests: EEG-like batches from the data pipeline, float64 switching,
and NNX twins of torch modules filled through parity/convert.py's table.

    def test_tcn(tiny, twin, forward, dtype):  # dtype: float32, then float64 with x64 on
        torch_tcn, jax_tcn = twin(ttcn.TCNEncoder(...), lambda rngs: jtcn.TCNEncoder(..., rngs=rngs), dtype)

Twins are built by nnx.eval_shape (no arrays, no init compiles) and then filled by torch_to_jax,
which must fill every Param or raise; only the Rng state of the Dropout layers, which eval mode
never reads, gets placeholder values. One jitted `forward` is shared by all tests, so a module
graph compiles once per shape and dtype.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

# Both frameworks are imported inside the fixtures: this file loads at pytest's start, and without
# torch or JAX installed (one twin alone) the test files are skipped, naming it (../conftest.py),
# where an import here would stop the whole run.

TINY = "configs/tiny.yaml"


@pytest.fixture(scope="session")
def twin():
    """make_twin(torch_module, build(rngs), dtype) -> (torch module, NNX twin)."""
    from parity.twins import make_twin

    return make_twin


@pytest.fixture(scope="session")
def forward():
    """One jitted `module(*args)` for every NNX module and shape (compiles are cached by graph)."""
    from flax import nnx

    return nnx.jit(lambda module, *args: module(*args))


@pytest.fixture(scope="session")
def detector():
    """detector(path, overrides=(), dtype="float32") -> SimpleNamespace(config, torch_model, jax_model)."""
    from parity.twins import detector_pair

    return detector_pair


@pytest.fixture(scope="session")
def eeg():
    """eeg(config, n_windows, seed=0) -> (x (B, C, T) float32, labels (B, T))."""
    from parity.scenarios import eeg_windows

    return eeg_windows


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The tiny v3 detector (float32, eval) in both frameworks and its real batch: x (2, 19, 1024),
    labels (2, 1024), and the torch taps on x (the re-seeded inputs of the module tests)."""
    import torch

    from parity.scenarios import eeg_windows
    from parity.twins import detector_pair

    pair = detector_pair(TINY)
    pair.x, pair.labels = eeg_windows(pair.config, n_windows=2)
    with torch.no_grad():
        _, taps = pair.torch_model(torch.from_numpy(pair.x))
    pair.torch_taps = {name: tap.numpy() for name, tap in taps.items()}
    for array in (pair.x, pair.labels, *pair.torch_taps.values()):
        array.flags.writeable = False  # shared by every test: a test that edits one must copy it
    return pair
