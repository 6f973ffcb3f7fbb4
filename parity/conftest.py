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

import copy
from collections.abc import Callable
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from einops import rearrange
from flax import nnx

import torchref.model as tmodel
from jaxbrr.config import Config, load_config
from jaxbrr.data.montage import REF19
from jaxbrr.data.preprocess import preprocess
from jaxbrr.data.synth import patient_traits, synthesize_recording
from jaxbrr.model import SeizureDetector
from parity.convert import torch_to_jax

TINY = "configs/tiny.yaml"
LEAD_IN_SECONDS = 2.0  # dropped: the causal bandpass's start-up transient


def eeg_windows(config: Config, n_windows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n_windows consecutive windows of one synthetic ref19 recording (background rhythms, drawn
    artifacts, a focal seizure over 40-75 % of the span, so windows hold both classes), run
    through jaxbrr.data.preprocess: x (B, C, T) float32 z-scored and clipped, labels (B, T) 0/1."""
    sfreq, window = config.preprocess.sfreq, config.window_samples
    span = n_windows * window / sfreq
    seizure = {"kind": "focal", "start_seconds": LEAD_IN_SECONDS + 0.4 * span, "duration_seconds": 0.35 * span}
    signals, events = synthesize_recording(np.random.default_rng(seed), sfreq, LEAD_IN_SECONDS + span,
                                           [seizure], patient_traits(seed, 1))
    uv = np.stack([signals[f"EEG {name.upper()}-REF"] for name in REF19])  # (C, N) µV
    x, _ = preprocess(uv, sfreq, config.preprocess, REF19)  # (C, N)
    lead = int(LEAD_IN_SECONDS * sfreq)
    x = x[:, lead : lead + n_windows * window]  # (C, B·T)
    t = np.arange(lead, lead + n_windows * window) / sfreq
    labels = np.zeros(t.shape, np.float32)
    for event in events:
        labels[(t >= event.start_seconds) & (t < event.stop_seconds)] = 1.0
    x = rearrange(x, "c (b t) -> b c t", b=n_windows)  # (B, C, T)
    return np.ascontiguousarray(x), rearrange(labels, "(b t) -> b t", b=n_windows)


def torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _materialize_rng_state(module: nnx.Module) -> None:
    """eval_shape leaves the Dropout layers' Rng keys and counts abstract; eval mode never reads
    them, but jit needs arrays. Params are not touched (torch_to_jax filled them, or raised)."""

    def concrete(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            assert leaf.shape == (), leaf
            return jax.random.key(0)
        return jnp.zeros(leaf.shape, leaf.dtype)

    nnx.update(module, jax.tree.map(concrete, nnx.state(module, nnx.Not(nnx.Param))))


def _build_abstract(build: Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
    """build(rngs) under nnx.eval_shape: every Param abstract, no init compiles (a full-size NNX
    init costs ~8 s of XLA compiles on a 2-core CPU, a tiny one ~9 s with the static PE).

    The rngs come in as an argument, so everything drawn from them stays abstract, while
    ensure_compile_time_eval lets a construction-time constant computed with jnp on concrete
    numbers (SeizureDetector's static PE: jaxbrr/model.py calls graph.static_pe in __init__)
    evaluate instead of failing on a tracer."""

    def constructed(rngs):
        with jax.ensure_compile_time_eval():
            return build(rngs)

    return nnx.eval_shape(constructed, nnx.Rngs(0))


def make_twin(torch_module: torch.nn.Module, build: Callable[[nnx.Rngs], nnx.Module], dtype: str = "float32"):
    """(torch module in `dtype`, eval mode; its NNX twin with the same weights, eval mode).

    The torch module is copied (never changed in place); build(rngs) constructs the NNX module
    (abstractly; torch_to_jax then fills every Param or raises). float64 needs jax_enable_x64 on
    (the x64/dtype fixtures)."""
    source = copy.deepcopy(torch_module).to(torch_dtype(dtype)).eval()
    target = _build_abstract(build)
    torch_to_jax(source, target)
    _materialize_rng_state(target)
    target.eval()
    return source, target


@pytest.fixture(scope="session")
def twin():
    """make_twin(torch_module, build(rngs), dtype) -> (torch module, NNX twin)."""
    return make_twin


@pytest.fixture(scope="session")
def forward():
    """One jitted `module(*args)` for every NNX module and shape (compiles are cached by graph)."""
    return nnx.jit(lambda module, *args: module(*args))


def detector_pair(path: str, overrides=(), dtype: str = "float32", seed: int = 0) -> SimpleNamespace:
    """SimpleNamespace(config, torch_model, jax_model): one config's SeizureDetector in both
    frameworks, torch's seeded init copied into the NNX one, eval mode."""
    config = load_config(path, list(overrides))
    torch_model, jax_model = make_twin(
        tmodel.SeizureDetector(config.model, seed), lambda rngs: SeizureDetector(config.model, rngs=rngs), dtype
    )
    return SimpleNamespace(config=config, torch_model=torch_model, jax_model=jax_model)


@pytest.fixture(scope="session")
def detector():
    """detector(path, overrides=(), dtype="float32") -> SimpleNamespace(config, torch_model, jax_model)."""
    return detector_pair


@pytest.fixture(scope="session")
def eeg():
    """eeg(config, n_windows, seed=0) -> (x (B, C, T) float32, labels (B, T))."""
    return eeg_windows


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The tiny v3 detector (float32, eval) in both frameworks and its real batch: x (2, 19, 1024),
    labels (2, 1024), and the torch taps on x (the re-seeded inputs of the module tests)."""
    pair = detector_pair(TINY)
    pair.x, pair.labels = eeg_windows(pair.config, n_windows=2)
    with torch.no_grad():
        _, taps = pair.torch_model(torch.from_numpy(pair.x))
    pair.torch_taps = {name: tap.numpy() for name, tap in taps.items()}
    for array in (pair.x, pair.labels, *pair.torch_taps.values()):
        array.flags.writeable = False  # shared by every test: a test that edits one must copy it
    return pair
