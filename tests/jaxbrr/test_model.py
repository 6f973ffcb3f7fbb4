"""jaxbrr.SeizureDetector: taps, parameter counts equal torchref's, one compile per shape, no NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import load_config
from jaxbrr import graph
from jaxbrr.model import SeizureDetector, count_parameters

TINY = "configs/tiny.yaml"


@pytest.mark.parametrize("path", [TINY, "configs/tusz.yaml"], ids=["tiny", "full"])
def test_parameter_count_equals_torchref(path):
    torchref_model = pytest.importorskip("torchref.model")
    config = load_config(path).model
    ours = count_parameters(SeizureDetector(config, rngs=nnx.Rngs(0)))
    theirs = torchref_model.count_parameters(torchref_model.SeizureDetector(config, 0))
    assert ours == theirs
    if path != TINY:
        assert ours == 9_040_392


@pytest.mark.parametrize(
    "overrides, n_taps",
    [([], 11), (["model.graph.enabled=false"], 6), (["model.graph.use_dynamic_pe=false"], 11),
     (["model.stability.guards=original"], 11), (["model.architecture=v2"], 4), (["model.architecture=tcn"], 3)],
    ids=["v3", "graph-off", "static-pe", "guards", "v2", "tcn"],
)
def test_tiny_switches_run_under_jit(overrides, n_taps):
    config = load_config(TINY, overrides)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.normal(jax.random.key(1), (2, 19, config.window_samples))
    logits, taps = nnx.jit(lambda m, x: m(x))(model, x)
    assert logits.shape == (2, config.window_samples) and len(taps) == n_taps
    assert bool(jnp.isfinite(logits).all())
    assert taps["tcn"].shape == (2, config.model.tcn.out_channels, config.window_samples // 16)


def test_compiles_once_per_shape():
    config = load_config(TINY)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    model.eval()
    traces = []

    @nnx.jit
    def forward(m, x):
        traces.append(x.shape)
        return m(x)[0]

    for seed in range(3):
        forward(model, jax.random.normal(jax.random.key(seed), (2, 19, 1024)))
    forward(model, jnp.zeros((1, 19, 1024)))
    assert traces == [(2, 19, 1024), (1, 19, 1024)]


def test_no_nan_under_debug_nans_forward_and_backward(tmp_path):
    """guards: none and pe_gradient: safe on a real (synthetic) EEG window: jax_debug_nans stays
    silent through the forward pass and the gradient of every parameter."""
    from common.data.preprocess import preprocess
    from common.data.synth import patient_traits, synthesize_recording

    config = load_config(TINY, ["model.stability.pe_gradient=safe", "model.stability.guards=none"])
    rng = np.random.default_rng(0)
    signals, _ = synthesize_recording(rng, 256, 8.0, [], patient_traits(0, 0), artifacts=[])
    from common.data.montage import REF19

    uv = np.stack([signals[f"EEG {name.upper()}-REF"] for name in REF19])
    x, _ = preprocess(uv, 256, config.preprocess, REF19)
    batch = jnp.asarray(np.stack([x[:, :1024], x[:, 1024:2048]]))
    labels = jnp.zeros((2, 1024)).at[:, 500:].set(1.0)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))

    def loss_fn(m):
        logits, _ = m(batch)
        return jnp.mean(jnp.logaddexp(0.0, logits) - labels * logits)

    with jax.debug_nans(True):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(loss)) and all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) > 0 for g in leaves) > 0.9 * len(leaves)  # gradients reach the model


def test_bfloat16_computes_in_bf16_on_float32_parameters():
    x = jax.random.normal(jax.random.key(1), (2, 19, 1024))
    taps = {}
    for precision in ("float32", "bfloat16"):
        config = load_config(TINY, [f"model.precision={precision}"])
        model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
        model.eval()
        assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
        logits, taps[precision] = nnx.jit(lambda m, x: m(x))(model, x)
        assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    assert taps["bfloat16"]["tcn"].dtype == jnp.bfloat16
    # the edge lift and projection convolve in bf16, as torch's autocast runs them; the softplus
    # after them in float32, as CUDA autocast does
    assert model.edge_lift.dtype == model.edge_proj.dtype == jnp.bfloat16
    assert taps["bfloat16"]["edge_weights"].dtype == jnp.float32
    assert taps["bfloat16"]["pe"].dtype == jnp.float32  # eigh stays float32
    # FLOAT32_STAGES take their inputs upcast, as torchref's: the similarities of the bf16
    # electrodes in float32 (rounding ~1e-7), not in bf16 (8-bit mantissa, ~4e-3).
    bf16 = taps["bfloat16"]
    assert bf16["electrodes"].dtype == jnp.bfloat16 and bf16["edge_features"].dtype == jnp.float32
    similarity = graph.edge_features(bf16["electrodes"].astype(jnp.float32), config.model.graph.edge_features, False)
    assert float(jnp.abs(bf16["edge_features"] - similarity).max()) < 1e-5
    a, b = taps["float32"]["tcn"], taps["bfloat16"]["tcn"].astype(jnp.float32)
    assert float(jnp.abs(a - b).max() / jnp.abs(a).max()) < 2e-2  # bf16 has an 8-bit mantissa


def test_tap_names_are_the_forward_order():
    config = load_config(TINY)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    model.eval()
    _, taps = model(jnp.zeros((1, 19, 1024)))
    assert tuple(taps) == config.model.tap_names  # eager: insertion order is forward order
