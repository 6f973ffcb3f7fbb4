"""jaxbrr/ssm.py: chunked SSD against the sequential lax.scan oracle, the masked segsum, and the
same functions in torchref/ssm.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from einops import rearrange

from common.config import ConfigError, load_config
from jaxbrr.ssm import SCANS, segsum, selective_scan, ssd_chunked, ssd_sequential
from parity.tolerances import tolerance
from torchref import ssm as torch_ssm

# float32 output and gradients against float64: the tolerance table's float32 gradient row (T3,
# parity/tolerances.py), ~500x the errors measured
FLOAT32_BOUND = tolerance("grad", "float32").rtol

BATCH, LENGTH, HEADS, HEADDIM, STATE = 2, 64, 4, 4, 8
NAMES = ["y", "dx", "ddt", "dA", "dB", "dC"]


def scan_inputs(groups=1, length=LENGTH, seed=0):
    """float64 numpy, realistic ranges: dt = softplus(N(0,1) - 1), A in [-8, -1], x, B, C ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, length, HEADS, HEADDIM))
    dt = np.logaddexp(rng.standard_normal((BATCH, length, HEADS)) - 1, 0)
    A = -(1 + 7 * rng.random(HEADS))
    B = rng.standard_normal((BATCH, length, groups, STATE))
    C = rng.standard_normal((BATCH, length, groups, STATE))
    return [x, dt, A, B, C]


def cotangent(length=LENGTH, seed=1):
    return np.random.default_rng(seed).standard_normal((BATCH, length, HEADS, HEADDIM))


@functools.partial(jax.jit, static_argnames=("scan", "chunk_size"))
def _value_and_grads(inputs, weights, scan, chunk_size):
    if scan == "naive":
        y, vjp = jax.vjp(naive_one_chunk_ssd, *inputs)
    else:
        y, vjp = jax.vjp(lambda *a: selective_scan(*a, scan=scan, chunk_size=chunk_size), *inputs)
    return [y, *vjp(weights)]


def value_and_grads(scan, inputs, weights, dtype, chunk_size=16):
    """y and d(sum y·weights)/d(x, dt, A, B, C) in `dtype` (jitted once per scan and shape)."""
    inputs = [jnp.asarray(t, dtype) for t in inputs]
    out = _value_and_grads(inputs, jnp.asarray(weights, dtype), scan, chunk_size)
    return [np.asarray(t) for t in out]


def max_rel_diffs(test, ref):
    return {n: float(np.abs(t.astype(np.float64) - r).max() / np.abs(r).max()) for n, t, r in zip(NAMES, test, ref, strict=True)}


def test_segsum_exact_values(x64):
    inf = np.inf
    expected = np.array([[0, -inf, -inf], [2, 0, -inf], [5, 3, 0]])
    np.testing.assert_array_equal(np.asarray(segsum(jnp.array([1.0, 2.0, 3.0]))), expected)
    assert segsum(jnp.zeros((2, 5, 7))).shape == (2, 5, 7, 7)


@pytest.mark.parametrize("chunk_size", [16, 7, 24])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_equals_sequential_float64(x64, chunk_size, groups):
    inputs, weights = scan_inputs(groups=groups), cotangent()
    ref = value_and_grads("sequential", inputs, weights, jnp.float64)
    test = value_and_grads("chunked", inputs, weights, jnp.float64, chunk_size=chunk_size)
    assert test[0].dtype == np.float64
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} G {groups} float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-10


@pytest.mark.parametrize("chunk_size", [16, 7, 24])
def test_chunked_and_sequential_float32_close_to_float64(x64, chunk_size):
    inputs, weights = scan_inputs(), cotangent()
    ref = value_and_grads("sequential", inputs, weights, jnp.float64)
    for name in ("chunked", "sequential"):
        test = value_and_grads(name, inputs, weights, jnp.float32, chunk_size=chunk_size)
        assert test[0].dtype == np.float32
        diffs = max_rel_diffs(test, ref)
        print(f"{name} chunk {chunk_size} float32 vs float64 max rel diff", diffs)
        assert max(diffs.values()) < FLOAT32_BOUND


def test_bfloat16_inputs_scan_in_float32(x64):
    x, dt, A, B, C = scan_inputs()
    ref = np.asarray(ssd_sequential(*map(jnp.asarray, (x, dt, A, B, C))))
    bf16 = [jnp.asarray(t, jnp.bfloat16) for t in (x, dt, B, C)]
    y = ssd_chunked(bf16[0], bf16[1], jnp.asarray(A, jnp.float32), bf16[2], bf16[3], chunk_size=16)
    assert y.dtype == jnp.bfloat16
    # Inputs rounded to bf16 (8-bit mantissa) and y rounded once: ~1 %, not the 300 % of a bf16 cumsum.
    assert np.abs(np.asarray(y, np.float64) - ref).max() / np.abs(ref).max() < 2e-2


def naive_one_chunk_ssd(x, dt, A, B, C):
    """The whole sequence as one chunk, with exp taken BEFORE the causal mask (the hazard)."""
    length = x.shape[1]
    cs = jnp.cumsum(dt * A, axis=1)  # (B, L, H)
    diff = rearrange(cs, "b l h -> b h l 1") - rearrange(cs, "b s h -> b h 1 s")  # (B, H, L, L)
    causal = jnp.tril(jnp.ones((length, length), bool))
    decay = jnp.where(causal, jnp.exp(diff), 0.0)  # inf above the diagonal, then masked
    CB = jnp.einsum("blgn,bsgn->bls", C, B)  # (B, L, L)
    return jnp.einsum("bls,bhls,bshp->blhp", CB, decay, x * dt[..., None])  # (B, L, H, P)


def test_segsum_gradient_finite_where_exp_overflows(x64):
    # a = -100 per step: unmasked differences above the diagonal reach +6300.
    for dtype in (jnp.float32, jnp.float64):
        a = jnp.full((3, LENGTH), -100.0, dtype)
        weights = jnp.asarray(np.random.default_rng(0).standard_normal((3, LENGTH, LENGTH)), dtype)
        grad = jax.grad(lambda a, w=weights: jnp.sum(jnp.exp(segsum(a)) * w))(a)
        assert bool(jnp.isfinite(grad).all())


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_masking_before_exp_keeps_gradients_finite(x64, dtype):
    # dt·A = -100 per step: cumsum differences above the diagonal reach +6300, exp overflows.
    x, _, _, B, C = scan_inputs()
    dt = np.full((BATCH, LENGTH, HEADS), 5.0)
    A = np.full((HEADS,), -20.0)
    inputs, weights = [x, dt, A, B, C], cotangent()

    stable = value_and_grads("chunked", inputs, weights, dtype, chunk_size=LENGTH)
    naive = value_and_grads("naive", inputs, weights, dtype)
    assert all(np.isfinite(t).all() for t in stable)
    assert np.isfinite(naive[0]).all()  # the forward pass hides it...
    np.testing.assert_allclose(naive[0], stable[0], rtol=1e-5, atol=1e-5)
    assert np.isnan(naive[2]).any() and np.isnan(naive[3]).any()  # ...ddt and dA are NaN

    # In float64 the stable result is also the right one, in every chunking.
    if dtype == jnp.float64:
        ref = value_and_grads("sequential", inputs, weights, dtype)
        for chunk_size in (LENGTH, 16, 7):
            test = value_and_grads("chunked", inputs, weights, dtype, chunk_size=chunk_size)
            assert max(max_rel_diffs(test, ref).values()) < 1e-10


@pytest.mark.parametrize("chunk_size", [16, 7])
def test_mask_after_exp_equals_chunked_float64(x64, chunk_size):
    # No exponent overflows on ordinary inputs: the hazard is invisible, forward and backward.
    inputs, weights = scan_inputs(groups=2), cotangent()
    ref = value_and_grads("chunked", inputs, weights, jnp.float64, chunk_size=chunk_size)
    test = value_and_grads("chunked_mask_after_exp", inputs, weights, jnp.float64, chunk_size=chunk_size)
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} mask_after_exp vs chunked float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-12


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_mask_after_exp_nan_gradients_where_exp_overflows(x64, dtype):
    # dt·A = -150 per step: within a chunk of 16, exp(cs_l - cs_s) above the diagonal overflows
    # from a gap of 1 step in float32 (150 > 88.7) and of 5 in float64 (750 > 709.8). A position s
    # with an overflowing l < s in its chunk gets a NaN dB_s (and Q - gap of them per chunk);
    # symmetrically for dC; the NaN reaches every dt and A through the cumsum; dx stays finite.
    x, _, _, B, C = scan_inputs()
    dt, A = np.full((BATCH, LENGTH, HEADS), 5.0), np.full((HEADS,), -30.0)
    inputs, weights, chunk_size = [x, dt, A, B, C], cotangent(), 16
    gap = 1 if dtype == jnp.float32 else 5
    per_state = BATCH * (LENGTH // chunk_size) * (chunk_size - gap) * STATE  # 960 / 704
    expected = {"dx": 0, "ddt": BATCH * LENGTH * HEADS, "dA": HEADS, "dB": per_state, "dC": per_state}

    stable = value_and_grads("chunked", inputs, weights, dtype, chunk_size=chunk_size)
    hazard = value_and_grads("chunked_mask_after_exp", inputs, weights, dtype, chunk_size=chunk_size)
    assert np.isfinite(hazard[0]).all()  # the forward pass hides it...
    np.testing.assert_allclose(hazard[0], stable[0], rtol=1e-6, atol=0)
    nans = {n: int(np.isnan(g).sum()) for n, g in zip(NAMES[1:], hazard[1:], strict=True)}
    print(f"{np.dtype(dtype).name} mask_after_exp NaN counts", nans)
    assert nans == expected  # ...the backward does not
    assert all(int(np.isnan(g).sum()) == 0 for g in stable[1:])


@pytest.mark.parametrize("chunk_size", [16, 7])
def test_matches_torchref_float64(x64, chunk_size):
    inputs, weights = scan_inputs(groups=2, length=50), cotangent(length=50)
    # 1. torch
    tensors = [torch.tensor(t, requires_grad=True) for t in inputs]
    y = torch_ssm.ssd_chunked(*tensors, chunk_size=chunk_size)
    grads = torch.autograd.grad((y * torch.tensor(weights)).sum(), tensors)
    ref = [y.detach().numpy()] + [g.numpy() for g in grads]
    # 2. jax
    test = value_and_grads("chunked", inputs, weights, jnp.float64, chunk_size=chunk_size)
    # 3. compare
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} jax vs torch float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-12


def test_selective_scan_dispatches_explicitly(x64):
    inputs = [jnp.asarray(t) for t in scan_inputs(length=20)]
    np.testing.assert_array_equal(selective_scan(*inputs, scan="chunked", chunk_size=8), ssd_chunked(*inputs, chunk_size=8))
    np.testing.assert_array_equal(selective_scan(*inputs, scan="sequential", chunk_size=8), ssd_sequential(*inputs))
    np.testing.assert_array_equal(
        selective_scan(*inputs, scan="chunked_mask_after_exp", chunk_size=8),
        ssd_chunked(*inputs, chunk_size=8, mask_after_exp=True),
    )
    with pytest.raises(ValueError, match="model.ssm.scan"):
        selective_scan(*inputs, scan="associative", chunk_size=8)


def test_every_scan_is_a_config_value():
    assert SCANS == torch_ssm.SCANS
    for scan in SCANS:
        assert load_config(None, [f"model.ssm.scan={scan}"]).model.ssm.scan == scan
    assert load_config().model.ssm.scan == "chunked"  # never the hazard by default
    with pytest.raises(ConfigError, match="model.ssm.scan"):
        load_config(None, ["model.ssm.scan=associative"])


def test_shape_mismatch_raises():
    x, dt, A, B, C = [jnp.asarray(t, jnp.float32) for t in scan_inputs(length=20)]
    with pytest.raises(ValueError, match="do not match"):
        ssd_chunked(x, dt[:, :10], A, B, C, chunk_size=8)
    B3, C3 = (jnp.broadcast_to(t, (BATCH, 20, 3, STATE)) for t in (B, C))
    with pytest.raises(ValueError, match="do not match"):
        ssd_chunked(x, dt, A, B3, C3, chunk_size=8)  # 3 groups for 4 heads
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, chunk_size=0)
