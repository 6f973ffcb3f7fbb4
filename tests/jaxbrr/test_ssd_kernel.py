"""jaxbrr/ssd_kernel.py (through jaxbrr/ssm.py ssd_pallas): the fused Pallas SSD kernels, run here in Pallas's interpreter, against the
float64 sequential oracle (values and every gradient), and lowered for CUDA to Triton IR at the
full-size node and edge shapes (what a GPU would compile). On a GPU (`-m gpu`, benchmarks/gpu_check.sh)
the compiled kernels are held to float64 as XLA's chunked scan on the same GPU is."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

from conftest import x64_enabled
from jaxbrr import norm_kernel, ssd_kernel, ssm
from jaxbrr.mamba import Mamba2
from jaxbrr.ssm import selective_scan, ssd_pallas
from tests.jaxbrr.kernel_checks import assert_as_close_to_float64, jax_gpu
from tests.jaxbrr.test_ssm import (
    FLOAT32_BOUND,
    cotangent,
    max_rel_diffs,
    scan_inputs,
    value_and_grads,
)
from torchref import ssm as torch_ssm

# Full size (configs/tusz.yaml): node stream d_inner 128 = 16 heads × 8, state 16; edge stream
# d_inner 32 = 8 heads × 4, state 8; one group; 960 steps; chunks of 16.
NODE, EDGE = (16, 8, 16), (8, 4, 8)
# test_ssm's dt (softplus(N(0,1) - 1)) with A in [-8, -1] decays a state by ~e^-29 over a chunk of
# 16: the state carried across chunks would not show in float32. The model starts with dt in
# [1e-3, 0.1] (jaxbrr/mamba.py DT_MIN, DT_MAX), long memory; every other head gets that regime.
SLOW = 0.02


def slow_heads(inputs: list[np.ndarray]) -> list[np.ndarray]:
    """x, dt, A, B, C with dt × SLOW on the even heads: both fast and slow decay in one batch."""
    x, dt, A, B, C = inputs
    return [x, dt * np.where(np.arange(dt.shape[-1]) % 2 == 0, SLOW, 1.0), A, B, C]


@functools.partial(jax.jit, static_argnames=("chunk_size", "heads_per_block"))
def _kernel_value_and_grads(inputs, weights, chunk_size, heads_per_block):
    scan = functools.partial(ssd_pallas, chunk_size=chunk_size, interpret=True, heads_per_block=heads_per_block)
    y, vjp = jax.vjp(scan, *inputs)
    return [y, *vjp(weights)]


def kernel_value_and_grads(inputs, weights, dtype, chunk_size=16, heads_per_block=None):
    out = _kernel_value_and_grads([jnp.asarray(t, dtype) for t in inputs], jnp.asarray(weights, dtype), chunk_size,
                                  heads_per_block)
    return [np.asarray(t) for t in out]


@pytest.mark.parametrize("chunk_size, groups, length, heads_per_block",
                         [(8, 1, 64, 1), (16, 2, 40, 2), (16, 2, 40, 1), (16, 1, 40, 4)])
def test_kernel_equals_sequential_float64(x64, chunk_size, groups, length, heads_per_block):
    """Values and the gradients of x, dt, A, B, C: the backward kernel's hand-derived equations
    (module docstring) against autodiff of the step-by-step recurrence; 40 steps pad to 48 (3
    chunks of 16). The backward's programs take 1 (of a group of 4, or of 2: B and C read from the
    right group's columns), 2 (a whole group of 2) or 4 heads (a whole group of 4), each head with
    its own carried state cotangent (slow heads make it count)."""
    inputs, weights = slow_heads(scan_inputs(groups=groups, length=length)), cotangent(length=length)
    ref = value_and_grads("sequential", inputs, weights, jnp.float64)
    test = kernel_value_and_grads(inputs, weights, jnp.float64, chunk_size, heads_per_block)
    assert test[0].dtype == np.float64
    diffs = max_rel_diffs(test, ref)
    print(f"pallas chunk {chunk_size} G {groups} L {length} R {heads_per_block} float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-10


def test_heads_per_program_keeps_enough_programs_and_whole_groups():
    """The full-size step at B=8 (node: 152 sequences × 16 heads; edge: 1,368 × 8): as many heads
    per backward program as leave ≥ MIN_PROGRAMS programs, a power of 2 dividing a group's heads."""
    assert ssd_kernel.MIN_PROGRAMS == 1024
    assert ssd_kernel.heads_per_program(152, 16, 1) == 2  # 1,216 programs; 4 would leave 608
    assert ssd_kernel.heads_per_program(1368, 8, 1) == 8  # a whole group: 1,368 programs
    assert ssd_kernel.heads_per_program(19, 16, 1) == 1  # one window: 304 programs already too few
    assert ssd_kernel.heads_per_program(4096, 12, 1) == 4  # 12 heads: 8 does not divide them
    assert ssd_kernel.heads_per_program(4096, 8, 4) == 2  # a group has 2 heads
    with pytest.raises(ValueError, match="must divide the 2 heads of a group"):
        x, dt, A, B, C = [jnp.asarray(t) for t in scan_inputs(groups=2, length=32)]
        jax.grad(lambda x: jnp.sum(ssd_pallas(x, dt, A, B, C, chunk_size=16, interpret=True, heads_per_block=4)))(x)


def test_kernel_float32_close_to_float64(x64):
    """The bound test_ssm.py holds ssd_chunked and ssd_sequential to in float32 (FLOAT32_BOUND). With slow heads it fails by 0.2–0.6 if either carry
    across chunks (exp(T)·S forward, exp(T)·dS' backward) is dropped."""
    inputs, weights = slow_heads(scan_inputs()), cotangent()
    ref = value_and_grads("sequential", inputs, weights, jnp.float64)
    test = kernel_value_and_grads(inputs, weights, jnp.float32)
    assert test[0].dtype == np.float32
    diffs = max_rel_diffs(test, ref)
    print("pallas float32 vs float64 max rel diff", diffs)
    assert max(diffs.values()) < FLOAT32_BOUND


def test_bfloat16_inputs_scan_in_float32():
    """bf16 in: the kernels run in float32 on the inputs' values, and y is rounded once to bf16."""
    x, dt, A, B, C = scan_inputs(length=32)
    bf16 = [jnp.asarray(t, jnp.bfloat16) for t in (x, dt, B, C)]
    A32 = jnp.asarray(A, jnp.float32)
    y = ssd_pallas(bf16[0], bf16[1], A32, bf16[2], bf16[3], chunk_size=16, interpret=True)
    assert y.dtype == jnp.bfloat16
    f32 = [t.astype(jnp.float32) for t in bf16]
    y32 = ssd_pallas(f32[0], f32[1], A32, f32[2], f32[3], chunk_size=16, interpret=True)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y32.astype(jnp.bfloat16), np.float32))


def test_refuses_a_cpu_without_interpret_and_sizes_triton_cannot_tile():
    x, dt, A, B, C = [jnp.asarray(t, jnp.float32) for t in scan_inputs(length=32)]
    if not ssd_kernel.on_gpu():
        with pytest.raises(ValueError, match="set model.ssm.scan=chunked"):
            selective_scan(x, dt, A, B, C, scan="pallas", chunk_size=16)
    with pytest.raises(ValueError, match="powers of 2.*'chunk_size': 12"):
        ssd_pallas(x, dt, A, B, C, chunk_size=12, interpret=True)
    with pytest.raises(ValueError, match="powers of 2.*'headdim': 3"):
        ssd_pallas(x[..., :3], dt, A, B, C, chunk_size=16, interpret=True)


def lower_for_cuda(shapes: list[tuple[int, ...]], dtype) -> str:
    """The train-time program (value and gradients of a scalar of y) lowered for CUDA on this
    machine: Pallas emits Triton IR here, so unsupported ops or shapes fail as they would on a GPU
    (Triton's own compile to PTX happens on the GPU only)."""
    def loss(*a):
        return jnp.sum(ssd_pallas(*a, chunk_size=16, interpret=False).astype(jnp.float32) ** 2)

    args = [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
    args[2] = jax.ShapeDtypeStruct(shapes[2], jnp.float32)  # A is a float32 parameter
    with ssd_kernel.lowering_without_a_gpu():
        exported = export.export(
            jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))), platforms=["cuda"],
            disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)
    return exported.mlir_module()


@pytest.mark.parametrize("stream", ["node", "edge"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lowers_to_triton_at_full_size(stream, dtype):
    heads, headdim, state = NODE if stream == "node" else EDGE
    batch, length = 2, 960
    module = lower_for_cuda([(batch, length, heads, headdim), (batch, length, heads), (heads,),
                             (batch, length, 1, state), (batch, length, 1, state)], dtype)
    calls = re.findall(r'custom_call @__gpu\$xla\.gpu\.triton.*?grid_x = (\d+).*?grid_y = (\d+).*?'
                       r'name = "(\w+)", num_stages = (\d+).*?num_warps = (\d+)', module)
    forward, backward = ssd_kernel.COMPILER_PARAMS, ssd_kernel.BACKWARD_COMPILER_PARAMS
    blocks = heads // ssd_kernel.heads_per_program(batch, heads, 1)
    assert sorted(calls) == sorted([
        (str(batch), str(heads), "ssd_forward", str(forward.num_stages), str(forward.num_warps)),
        (str(batch), str(blocks), "ssd_backward", str(backward.num_stages), str(backward.num_warps))])


@pytest.mark.parametrize("d_model, d_state", [(16, 8), (12, 32)])
def test_mamba2_with_the_kernel_equals_chunked(x64, monkeypatch, d_model, d_state):
    """The model's wiring: Mamba2 with scan pallas (interpreted) against scan chunked on the same
    parameters, output and every parameter gradient, float64. d_inner 32 (a power of 2, a multiple
    of d_state 8): x, B, C read in place and the norm kernels; d_inner 24 with d_state 32: B read
    after zero columns, the norm by XLA (Triton tiles powers of 2 only)."""
    monkeypatch.setattr(ssm, "ssd_pallas_xbc", functools.partial(ssm.ssd_pallas_xbc, interpret=True))
    monkeypatch.setattr(norm_kernel, "gated_norm", functools.partial(norm_kernel.gated_norm, interpret=True))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 40, d_model)))

    def run(scan):
        model = Mamba2(d_model, d_state, 4, 2, 4, scan=scan, chunk_size=8, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        model.D[...] = jnp.linspace(0.5, 2.0, model.nheads)  # D ≠ 1: the skip term's gradient counts

        def loss(m):
            return jnp.sum(jnp.sin(m(x)))
        value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
        return value, jax.tree.leaves(nnx.state(grads))

    (v_ref, g_ref), (v, g) = run("chunked"), run("pallas")
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    assert len(g) == len(g_ref) > 0
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12 * np.abs(b).max())


def test_mamba2_with_the_kernels_in_bfloat16_computes_as_chunked(monkeypatch):
    """bf16 compute on float32 parameters: the kernels take xBC, y, z in bf16 and dt, A, D, w in
    float32, and give y and the norm's output in bf16 (asserted on the traced kernels). Values:
    both paths round float32 values that agree up to summation order to bf16 (the norm's output,
    dy, dx), and one may land one bf16 step from the other; a gradient sums many such terms, so
    how far the two paths land from each other has no bound of its own. float64 arbitrates (the
    same parameters computed in float64): the output and every gradient of the kernels at most
    4× as far from it as the chunked scan's in bf16, plus one bf16 step (2^-7) of the largest
    value, the form the GPU tests use. A missing term moves a value by its own size (the bf16
    model is 1e-3 to 1e-2 from float64 here); a wrong cast is caught on the traced kernels."""
    monkeypatch.setattr(ssm, "ssd_pallas_xbc", functools.partial(ssm.ssd_pallas_xbc, interpret=True))
    monkeypatch.setattr(norm_kernel, "gated_norm", functools.partial(norm_kernel.gated_norm, interpret=True))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 40, 16)), jnp.float32)

    def run(scan, dtype=jnp.bfloat16):
        model = Mamba2(16, 8, 4, 2, 4, scan=scan, chunk_size=8, dtype=dtype, rngs=nnx.Rngs(0))
        model.D[...] = jnp.linspace(0.5, 2.0, model.nheads, dtype=jnp.float32)  # D ≠ 1: dx = D·dy rounds
        out = nnx.jit(lambda m: m(x))(model)
        grads = nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.sin(m(x).astype(jnp.promote_types(dtype, jnp.float32))))))(model)
        return out, jax.tree.leaves(nnx.state(grads))

    (out_ref, g_ref), (out, g) = run("chunked"), run("pallas")
    with x64_enabled():  # the parameters are float32 either way; their gradients too
        out64, g64 = run("chunked", jnp.float64)
    model = Mamba2(16, 8, 4, 2, 4, scan="pallas", chunk_size=8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    calls = ssd_kernel.pallas_calls(jax.make_jaxpr(jax.grad(
        lambda s: jnp.sum(nnx.merge(graphdef, s)(x).astype(jnp.float32))))(state))
    dtypes = {eqn.params["name"]: ([v.aval.dtype.name for v in eqn.invars], [v.aval.dtype.name for v in eqn.outvars])
              for eqn in calls}
    bf16, f32 = "bfloat16", "float32"
    assert dtypes["ssd_forward"] == ([bf16, f32, f32, bf16, bf16], [bf16, f32])  # xbc, dt, A, xbc, xbc -> y, states
    assert dtypes["gated_norm_forward"] == ([bf16, bf16, bf16, f32, f32], [bf16, f32])  # y, xBC, zxbcdt, D, w
    assert dtypes["gated_norm_backward"][1] == [bf16, bf16, bf16, f32, f32]  # dy, dx, dz, sums of dD, dw
    assert out.dtype == out_ref.dtype == jnp.bfloat16
    assert len(g) == len(g_ref) == len(g64) > 0
    assert all(a.dtype == b.dtype == jnp.float32 for a, b in zip(g, g_ref, strict=True))
    paths = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    names = ["out", *(jax.tree_util.keystr(p) for p, _ in paths)]
    kernels, chunked, reference = ([np.asarray(t, np.float64) for t in (o, *grads)]
                                   for o, grads in ((out, g), (out_ref, g_ref), (out64, g64)))
    assert_as_close_to_float64("Mamba2 bf16", names, kernels, chunked, reference, ulps=1, eps=2.0 ** -7)


def test_torchref_computes_pallas_as_chunked():
    import torch

    inputs = [torch.as_tensor(t) for t in scan_inputs(length=24)]
    torch.testing.assert_close(torch_ssm.selective_scan(*inputs, scan="pallas", chunk_size=8),
                               torch_ssm.ssd_chunked(*inputs, chunk_size=8), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(jax_gpu() is None, reason="needs a GPU visible to JAX")
@pytest.mark.parametrize("stream, dtype, heads_per_block", [
    ("node", jnp.float32, 1), ("node", jnp.bfloat16, 1), ("edge", jnp.float32, 1), ("edge", jnp.bfloat16, 1),
    ("node", jnp.float32, 2), ("edge", jnp.float32, 8)])  # the backward's blocks in the B=8 step
def test_compiled_kernels_on_the_gpu_are_as_close_to_float64_as_xla_chunked(x64, stream, dtype, heads_per_block):
    """One full-size window (19 node or 171 edge sequences of 960 steps), value and every gradient:
    float64 arbitrates (the sequential oracle on the CPU, on the inputs as rounded to `dtype`). The
    kernels' error may not exceed 4× that of XLA's chunked scan at full float32 matmul precision on
    the same GPU, plus 16 float32 ulps of the largest value: the same algorithm in the same float32,
    with its sums in another order, and a sum of Q = 16 terms rounds by up to (Q - 1)·eps of their
    magnitudes in any order. Measured with the interpreter on the CPU: 0.1–1.2× XLA's error."""
    heads, headdim, state = NODE if stream == "node" else EDGE
    sequences = 19 if stream == "node" else 171
    rng = np.random.default_rng(0)
    x = rng.standard_normal((sequences, 960, heads, headdim))
    dt = np.logaddexp(rng.standard_normal((sequences, 960, heads)) - 1, 0)
    A = -(1 + 7 * rng.random(heads))
    B, C = rng.standard_normal((2, sequences, 960, 1, state))
    x, dt, A, B, C = slow_heads([x, dt, A, B, C])
    weights = rng.standard_normal(x.shape)
    rounded = [np.asarray(jnp.asarray(t, dtype), np.float64) for t in (x, dt)]
    inputs = [rounded[0], rounded[1], A, *(np.asarray(jnp.asarray(t, dtype), np.float64) for t in (B, C))]
    with jax.default_device(jax.devices("cpu")[0]):
        ref = value_and_grads("sequential", inputs, weights, jnp.float64)
    gpu = jax_gpu()

    def on_gpu(scan_fn):
        args = [jax.device_put(jnp.asarray(t, jnp.float32 if i == 2 else dtype), gpu) for i, t in enumerate(inputs)]
        w = jax.device_put(jnp.asarray(weights, dtype), gpu)
        y, vjp = jax.jit(lambda *a: jax.vjp(scan_fn, *a))(*args)
        return [np.asarray(t, np.float64) for t in (y, *vjp(w))]

    with jax.default_matmul_precision("highest"):
        kernels = on_gpu(lambda *a: ssd_pallas(*a, chunk_size=16, heads_per_block=heads_per_block))
        xla = on_gpu(lambda *a: selective_scan(*a, scan="chunked", chunk_size=16))
    assert_as_close_to_float64(f"{stream} {jnp.dtype(dtype).name} R {heads_per_block}",
                               ["y", "dx", "ddt", "dA", "dB", "dC"], kernels, xla, ref, ulps=16)


@pytest.mark.parametrize("heads_per_block", [1, 2])
def test_hbm_bytes_counts_the_traced_kernels_operands_and_results(heads_per_block):
    """hbm_bytes (what roofline.py adds for scan pallas) against the kernels as traced: each
    pallas_call's operands read once and results written once (but A and the per-sequence dA,
    which hbm_bytes leaves out), B and C once per head in the forward and once per block of heads
    in the backward, and, when a block is less than a group, the per-block dB, dC read again by
    the group sum, which writes the grouped ones."""
    groups, heads, state, chunk = 2, 4, 8, 16
    x, dt, A, B, C = [jnp.asarray(t, jnp.float32) for t in scan_inputs(groups=groups, length=40)]

    def forward_and_backward(*args):
        scan = functools.partial(ssd_pallas, chunk_size=chunk, interpret=True, heads_per_block=heads_per_block)
        y, vjp = jax.vjp(scan, *args)
        return vjp(y)

    calls = ssd_kernel.pallas_calls(jax.make_jaxpr(forward_and_backward)(x, dt, A, B, C))
    assert sorted(eqn.params["name"] for eqn in calls) == ["ssd_backward", "ssd_forward"]
    per_group = heads // groups

    def nbytes(var):
        return int(np.prod(var.aval.shape)) * var.aval.dtype.itemsize

    counted = 0
    for eqn in calls:
        xbc, _, _, b_src, c_src = eqn.invars[:5]  # x, B and C are columns of one packed operand
        assert xbc is b_src is c_src and xbc.aval.shape[-1] == heads * x.shape[3] + 2 * groups * state
        rows_bytes = xbc.aval.shape[0] * xbc.aval.shape[1] * xbc.aval.dtype.itemsize  # one column's
        programs_per_group = per_group if eqn.params["name"] == "ssd_forward" else per_group // heads_per_block
        counted += rows_bytes * (heads * x.shape[3] + programs_per_group * 2 * groups * state)  # x; B, C
        counted += sum(map(nbytes, eqn.invars[1:3] + eqn.invars[5:])) + sum(map(nbytes, eqn.outvars))
        counted -= sum(nbytes(v) for v in [*eqn.invars, *eqn.outvars] if v.aval.shape in ((heads,), (x.shape[0], heads)))
        if eqn.params["name"] == "ssd_backward" and programs_per_group > 1:  # the group sum of dB, dC
            sequences, length = xbc.aval.shape[:2]
            grouped = 2 * sequences * length * groups * state * eqn.outvars[3].aval.dtype.itemsize  # dB, dC
            counted += sum(nbytes(v) for v in eqn.outvars[3:]) + grouped
    padded = (x.shape[0], 48, heads, x.shape[3])  # 40 steps pad to 3 chunks of 16
    traffic = ssd_kernel.hbm_bytes(padded, groups, state, chunk, heads_per_block=heads_per_block)
    assert traffic["forward"] + traffic["backward"] == counted
