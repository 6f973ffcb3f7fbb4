"""The Mamba-2 mixer's skip term and gated RMSNorm fused into Pallas kernels, forward and backward
(config `model.ssm.scan: pallas`, beside the scan kernels of jaxbrr/ssd_kernel.py; jaxbrr/mamba.py
calls `gated_norm`):

    out = rmsnorm((y + D·x) · silu(z)) · w        over the E = H·P columns of each row (token)

mamba_ssm's `rms_norm_ref` with norm_before_gate=False and one group, with the mixer's D·x skip
folded in (jaxbrr/mamba.py `gated_rms_norm` after `y + x·D`: the same math, in the same order).

Why: compiled for an H200, XLA makes this a forward that writes (y + D·x)·silu(z) in float32 for
the backward and reads it back to normalise, and a backward that recomputes the norm twice, once
in the fusion that makes dy and once in the one that assembles the in_proj output's cotangent,
each reading y, x, z and the output cotangent again (benchmarks/gpu_aot.py --top: 13 GB of the
94 GB bf16 B=8 step). Here the forward reads y, x, z once and writes the output in the dtype
out_proj computes in and one float32 per row (1 / rms); the backward reads them and the output
cotangent once and writes dy, dx = D dy and dz, with each program's share of dD and dw.

x and z are read in place from the arrays they are columns of (x from the conv output xBC, z from
the in_proj output): a column slice handed to a kernel would be copied first. Their cotangents are
those columns' (zeros beside, which XLA adds into the other columns' cotangent as it assembles it).

Per row, in the norm's dtype (at least float32), with v = y + D x, s = σ(z), g = v · z s,
r = (mean(g²) + eps)^-½, n = g r and out = n w, and dout the output cotangent:
    dn = dout w,   dw = Σ_rows dout n,   dg = r (dn − n · mean(dn n))
    dy = dg · z s, dx = D dy,  dD = Σ_rows dy x,   dz = dg · v · s (1 + z (1 − s))
σ(z) = 1 / (1 + exp(−z)): exp overflows to inf for z < −88 (float32) and σ is then 0, its
derivative s(1 + z(1 − s)) too: no inf or NaN reaches a result. The kernels are row-blocked
(`block_rows`) with every column of a row in one program, so E must be a power of 2 (Triton's
tensors); rows are padded to a whole number of blocks with zeros (a zero row normalises to 0 and
adds nothing to dD or dw).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

# A block is about this many values per operand: 16 rows of the node stream's 128 columns, 64 of
# the edge stream's 32 (16 values a thread at 4 warps; ~9,000 and ~20,000 programs at full size
# B=8). At 8192 ptxas spilled the backward by 1064 (node) and 348 (edge) bytes a thread; at 2048
# it uses 128 registers and spills nothing (sm_90a, benchmarks/gpu_aot.py).
BLOCK_VALUES = 2048
COMPILER_PARAMS = pl_triton.CompilerParams(num_warps=4, num_stages=2)


def block_rows(columns: int) -> int:
    """Rows per program for rows of `columns` values (a power of 2): BLOCK_VALUES / columns, at
    least 1."""
    return max(1, BLOCK_VALUES // columns)


def _sigmoid(z: jax.Array) -> jax.Array:
    return 1 / (1 + jnp.exp(-z))  # Triton has no logistic; inf for z < -88 gives 0, not NaN


def _gated(y_ref, x_ref, z_ref, d_ref, norm) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """v = y + D x, z, s = σ(z), g = v · z s for one block of rows, in the norm's dtype."""
    v = y_ref[...].astype(norm) + x_ref[...].astype(norm) * d_ref[...].astype(norm)[None, :]  # (M, E)
    z = z_ref[...].astype(norm)  # (M, E)
    s = _sigmoid(z)
    return v, z, s, v * (z * s)


def _forward_kernel(y_ref, x_ref, z_ref, d_ref, w_ref, out_ref, rstd_ref, *, eps: float):
    norm = rstd_ref.dtype
    _, _, _, g = _gated(y_ref, x_ref, z_ref, d_ref, norm)
    rstd = 1 / jnp.sqrt(jnp.mean(g * g, axis=-1) + eps)  # (M,)
    out_ref[...] = (g * rstd[:, None] * w_ref[...].astype(norm)[None, :]).astype(out_ref.dtype)
    rstd_ref[...] = rstd


def _backward_kernel(y_ref, x_ref, z_ref, d_ref, w_ref, rstd_ref, dout_ref,
                     dy_ref, dx_ref, dz_ref, dd_ref, dw_ref):
    norm = rstd_ref.dtype
    v, z, s, g = _gated(y_ref, x_ref, z_ref, d_ref, norm)
    rstd = rstd_ref[...][:, None]  # (M, 1)
    n, dout = g * rstd, dout_ref[...].astype(norm)  # (M, E)
    dn = dout * w_ref[...].astype(norm)[None, :]
    dg = rstd * (dn - n * jnp.mean(dn * n, axis=-1, keepdims=True))  # (M, E)
    dy = dg * (z * s)
    dy_ref[...] = dy.astype(dy_ref.dtype)
    dx_ref[...] = (dy * d_ref[...].astype(norm)[None, :]).astype(dx_ref.dtype)  # rounded once, as XLA's
    dz_ref[...] = (dg * v * (s * (1 + z * (1 - s)))).astype(dz_ref.dtype)
    dd_ref[...] = jnp.sum(dy * x_ref[...].astype(norm), axis=0)  # (E,): this block's share of dD
    dw_ref[...] = jnp.sum(dout * n, axis=0)  # (E,): of dw


def _specs(rows: int, columns: int):
    """The blocks over the grid (block of rows i): the first `columns` columns of each (M, ·)
    operand, the whole (E,) vectors, rows of the (M,) 1/rms, one row of the (blocks, E) sums."""
    block = pl.BlockSpec((rows, columns), lambda i: (i, 0))
    vector = pl.BlockSpec((columns,), lambda i: (0,))
    per_row = pl.BlockSpec((rows,), lambda i: (i,))
    per_block = pl.BlockSpec((None, columns), lambda i: (i, 0))
    return block, vector, per_row, per_block


def _forward(y, x_src, z_src, D, weight, eps, out_dtype, interpret):
    (length, columns), rows = y.shape, block_rows(y.shape[1])
    norm = _norm_dtype(y, x_src, z_src, D, weight)
    block, vector, per_row, _ = _specs(rows, columns)
    return pl.pallas_call(
        functools.partial(_forward_kernel, eps=eps),
        out_shape=(jax.ShapeDtypeStruct((length, columns), out_dtype), jax.ShapeDtypeStruct((length,), norm)),
        grid=(length // rows,), in_specs=[block, block, block, vector, vector], out_specs=(block, per_row),
        compiler_params=COMPILER_PARAMS, interpret=interpret, name="gated_norm_forward",
    )(y, x_src, z_src, D, weight)


def _backward(y, x_src, z_src, D, weight, rstd, dout, interpret):
    (length, columns), rows = y.shape, block_rows(y.shape[1])
    blocks = length // rows
    block, vector, per_row, per_block = _specs(rows, columns)
    sums = jax.ShapeDtypeStruct((blocks, columns), rstd.dtype)
    return pl.pallas_call(
        _backward_kernel,
        out_shape=(jax.ShapeDtypeStruct(y.shape, y.dtype), jax.ShapeDtypeStruct(y.shape, x_src.dtype),
                   jax.ShapeDtypeStruct(y.shape, z_src.dtype), sums, sums),
        grid=(blocks,), in_specs=[block, block, block, vector, vector, per_row, block],
        out_specs=(block, block, block, per_block, per_block),
        compiler_params=COMPILER_PARAMS, interpret=interpret, name="gated_norm_backward",
    )(y, x_src, z_src, D, weight, rstd, dout)


def _norm_dtype(*arrays: jax.Array) -> jnp.dtype:
    """The norm's dtype: the widest input's, at least float32 (float64 under jax_enable_x64)."""
    return jnp.result_type(jnp.float32, *arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _fused(y, x_src, z_src, D, weight, eps: float, out_dtype, interpret: bool) -> jax.Array:
    return _forward(y, x_src, z_src, D, weight, eps, out_dtype, interpret)[0]


def _fused_fwd(y, x_src, z_src, D, weight, eps, out_dtype, interpret):
    out, rstd = _forward(y, x_src, z_src, D, weight, eps, out_dtype, interpret)
    return out, (y, x_src, z_src, D, weight, rstd)


def _fused_bwd(eps, out_dtype, interpret, residuals, dout):
    y, x_src, z_src, D, weight, rstd = residuals
    dy, dx, dz, dD, dw = _backward(y, x_src, z_src, D, weight, rstd, dout, interpret)
    columns = y.shape[1]

    def beside(t, src):  # the cotangent of the source's first columns, zeros in the others
        return jnp.pad(t, ((0, 0), (0, src.shape[1] - columns)))

    return (dy, beside(dx, x_src), beside(dz, z_src), jnp.sum(dD, axis=0).astype(D.dtype),
            jnp.sum(dw, axis=0).astype(weight.dtype))


_fused.defvjp(_fused_fwd, _fused_bwd)


def gated_norm(y: jax.Array, x_src: jax.Array, z_src: jax.Array, D: jax.Array, weight: jax.Array, eps: float,
               out_dtype=None, interpret: bool | None = None) -> jax.Array:
    """rmsnorm((y + D·x) · silu(z)) · weight, rows (M, E) -> (M, E) in out_dtype (None: the norm's).

    y (M, E); x and z the first E columns of x_src (M, ≥E) and z_src (M, ≥E); D and weight (E,)
    (D repeated over each head's columns). interpret=None compiles for the GPU (Triton) and refuses
    other backends (as the scan kernels do); True runs Pallas's interpreter on any backend."""
    from jaxbrr import ssd_kernel  # the one refusal of scan pallas off a GPU

    length, columns = y.shape
    if columns < 1 or columns & (columns - 1):
        raise ValueError(f"model.ssm.scan = 'pallas' needs a power of 2 for d_inner = expand·d_model, got "
                         f"{columns}; use scan: chunked for other sizes")
    if x_src.shape[0] != length or z_src.shape[0] != length or min(x_src.shape[1], z_src.shape[1]) < columns \
            or D.shape != (columns,) or weight.shape != (columns,):
        raise ValueError(f"gated_norm: y {y.shape}, x_src {x_src.shape}, z_src {z_src.shape}, D {D.shape}, "
                         f"weight {weight.shape} do not fit")
    if interpret is None:
        ssd_kernel.require_gpu()
        interpret = False
    out_dtype = _norm_dtype(y, x_src, z_src, D, weight) if out_dtype is None else jnp.dtype(out_dtype)
    pad = -length % block_rows(columns)
    if pad:  # zero rows normalise to 0 and add nothing to dD, dw; cut off below
        y, x_src, z_src = (jnp.pad(t, ((0, pad), (0, 0))) for t in (y, x_src, z_src))
    return _fused(y, x_src, z_src, D, weight, float(eps), out_dtype, interpret)[:length]
