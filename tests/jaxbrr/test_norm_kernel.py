"""jaxbrr/norm_kernel.py: the skip term and gated RMSNorm kernels, run here in Pallas's interpreter
against the XLA composition they replace (jaxbrr/mamba.py: `gated_rms_norm(y + x·D, z, w)`) in
float64, value and every gradient; in bfloat16 the same output to the last rounding; lowered for
CUDA to Triton IR at the full-size shapes. On a GPU (`-m gpu`) the compiled kernels are held to
float64 as the XLA composition on the same GPU is."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from jaxbrr import norm_kernel, ssd_kernel
from jaxbrr.mamba import skip_and_gated_norm
from jaxbrr.norm_kernel import gated_norm
from tests.jaxbrr.kernel_checks import assert_as_close_to_float64, jax_gpu

EPS = 1e-5


def norm_inputs(rows: int, columns: int, heads: int, rng) -> list[np.ndarray]:
    """y (M, E); xBC-like (M, E + 16) and in_proj-output-like (M, 2E + 24) sources whose first E
    columns are x and z; D (H,); weight (E,). z spans ±9 (σ near 0 and 1)."""
    return [rng.standard_normal((rows, columns)), rng.standard_normal((rows, columns + 16)),
            3 * rng.standard_normal((rows, 2 * columns + 24)), rng.standard_normal(heads),
            1 + 0.5 * rng.standard_normal(columns)]


def xla(y, x_src, z_src, D, weight):
    """The composition the kernels replace, as jaxbrr/mamba.py computes it (D per head)."""
    columns = y.shape[1]
    return skip_and_gated_norm(y, x_src, z_src, jnp.repeat(D, columns // D.shape[0]), weight, EPS)


def kernels(y, x_src, z_src, D, weight, interpret=True):
    columns = y.shape[1]
    return gated_norm(y, x_src, z_src, jnp.repeat(D, columns // D.shape[0]), weight, EPS, interpret=interpret)


def value_and_grads(fn, inputs, cotangent):
    out, vjp = jax.vjp(fn, *inputs)
    return [np.asarray(t, np.float64) for t in (out, *vjp(cotangent))]


@pytest.mark.parametrize("rows, columns, heads", [(100, 32, 8), (64, 128, 16)])  # 100: padded to a block
def test_kernels_equal_the_xla_composition_float64(x64, rows, columns, heads):
    rng = np.random.default_rng(rows)
    inputs = [jnp.asarray(t) for t in norm_inputs(rows, columns, heads, rng)]
    cotangent = jnp.asarray(rng.standard_normal((rows, columns)))
    got, expected = (value_and_grads(fn, inputs, cotangent) for fn in (kernels, xla))
    for name, a, b in zip(["out", "dy", "dx_src", "dz_src", "dD", "dw"], got, expected, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=name)
    # the sources' other columns are not read: their cotangents are exactly 0
    assert not got[2][:, columns:].any() and not got[3][:, columns:].any()


def test_bfloat16_output_is_the_xla_compositions_to_one_rounding():
    """bf16 in, the norm in float32, bf16 out (out_dtype): both round the same float32 values,
    which differ by a few float32 ulps (another sum order, σ as 1/(1+e^-z)), so an output may
    land one bf16 step apart and no further."""
    rng = np.random.default_rng(1)
    y, x_src, z_src, D, w = norm_inputs(256, 32, 8, rng)
    bf16 = [jnp.asarray(t, jnp.bfloat16) for t in (y, x_src, z_src)]
    D32, w32 = jnp.asarray(D, jnp.float32), jnp.asarray(w, jnp.float32)
    got = gated_norm(*bf16, jnp.repeat(D32, 4), w32, EPS, out_dtype=jnp.bfloat16, interpret=True)
    expected = xla(*bf16, D32, w32).astype(jnp.bfloat16)  # float32 in jaxbrr/mamba.py, cast by out_proj
    assert got.dtype == jnp.bfloat16
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    step = np.abs(expected) * 2.0 ** -7  # one bf16 step (8 significant bits) at that magnitude
    assert (np.abs(got - expected) <= step).all()


def test_refuses_a_cpu_without_interpret_and_a_width_triton_cannot_tile():
    y, x_src, z_src, D, w = (jnp.asarray(t, jnp.float32) for t in norm_inputs(32, 24, 4, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="power of 2 for d_inner.*24"):
        gated_norm(y, x_src, z_src, jnp.repeat(D, 6), w, EPS, interpret=True)
    if not ssd_kernel.on_gpu():
        y, x_src, z_src, D, w = (jnp.asarray(t, jnp.float32) for t in norm_inputs(32, 32, 4, np.random.default_rng(2)))
        with pytest.raises(ValueError, match="set model.ssm.scan=chunked"):
            gated_norm(y, x_src, z_src, jnp.repeat(D, 8), w, EPS)


@pytest.mark.parametrize("columns, sources", [(128, (160, 304)), (32, (48, 88))])  # node, edge stream
def test_lowers_to_triton_at_full_size(columns, sources):
    """Value and gradients at one window's rows (19 or 171 sequences × 960 steps), bf16, lowered for
    CUDA here: Pallas emits Triton IR, so an op or block Triton cannot take fails as on a GPU."""
    rows = (19 if columns == 128 else 171) * 960

    def loss(y, x_src, z_src, D, w):
        out = gated_norm(y, x_src, z_src, D, w, EPS, out_dtype=jnp.bfloat16, interpret=False)
        return jnp.sum(out.astype(jnp.float32) ** 2)

    args = [jax.ShapeDtypeStruct(s, jnp.bfloat16) for s in ((rows, columns), (rows, sources[0]), (rows, sources[1]))]
    args += [jax.ShapeDtypeStruct((columns,), jnp.float32)] * 2
    saved, ssd_kernel.on_gpu = ssd_kernel.on_gpu, lambda: True  # the refusal looks at this machine
    try:
        with ssd_kernel.lowering_without_a_gpu():
            module = export.export(
                jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))), platforms=["cuda"],
                disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args).mlir_module()
    finally:
        ssd_kernel.on_gpu = saved
    calls = re.findall(r'custom_call @__gpu\$xla\.gpu\.triton.*?grid_x = (\d+).*?name = "(\w+)"', module)
    blocks = str(-(-rows // norm_kernel.block_rows(columns)))
    assert sorted(calls) == [(blocks, "gated_norm_backward"), (blocks, "gated_norm_forward")]


@pytest.mark.gpu
@pytest.mark.skipif(jax_gpu() is None, reason="needs a GPU visible to JAX")
@pytest.mark.parametrize("columns, heads", [(128, 16), (32, 8)])  # node, edge stream
def test_compiled_kernels_on_the_gpu_are_as_close_to_float64_as_xla(x64, columns, heads):
    """One full-size window's rows in float32, value and every gradient, float64 arbitrating (the
    composition on the CPU). The kernels' error may not exceed 4× the XLA composition's on the same
    GPU plus E float32 ulps of the largest value: the same float32 arithmetic with its row sums (E
    terms, each rounding by up to (E - 1)·eps of their magnitudes) in another order."""
    rows = (19 if columns == 128 else 171) * 960
    rng = np.random.default_rng(3)
    inputs = norm_inputs(rows, columns, heads, rng)
    cotangent = rng.standard_normal((rows, columns))
    inputs = [np.asarray(np.float32(t), np.float64) for t in inputs]  # as rounded to float32
    with jax.default_device(jax.devices("cpu")[0]):
        ref = value_and_grads(xla, [jnp.asarray(t) for t in inputs], jnp.asarray(cotangent))
    gpu = jax_gpu()
    args = [jax.device_put(jnp.asarray(t, jnp.float32), gpu) for t in inputs]
    w = jax.device_put(jnp.asarray(cotangent, jnp.float32), gpu)

    def on_gpu(fn):
        out, vjp = jax.jit(lambda *a: jax.vjp(fn, *a))(*args)
        return [np.asarray(t, np.float64) for t in (out, *vjp(w))]

    got, base = on_gpu(lambda *a: kernels(*a, interpret=False)), on_gpu(xla)
    assert_as_close_to_float64(f"gated norm E {columns}", ["out", "dy", "dx_src", "dz_src", "dD", "dw"],
                               got, base, ref, ulps=columns)
