"""The chunked SSD scan fused into Pallas kernels (config `model.ssm.scan: pallas`; jaxbrr/ssm.py
`ssd_pallas` prepares the inputs and calls `fused_scan`).

Why: `ssd_chunked` in XLA materialises its within-chunk weights, (sequences, heads, chunks, Q, Q),
and reads them again in the backward pass. On a GPU that traffic, not arithmetic, bounds the train
step: compiled for an H200, the full-size bf16 step at B=8 moves 238 GB against 3.3 TFLOP (XLA:CPU
counts 552 GB, 295 of them in the scans; BENCHMARKS.md, "How many bytes the step moves" and "What
the GPU's compiler makes of the step"). Here one program per (sequence, head) walks its chunks in
order and keeps the weights and the carried state in registers, so the forward reads x, dt, B, C
once (x, B, C in the compute dtype, bfloat16 under bf16, read in place as column blocks of the
mixer's conv output xBC, which a column slice would copy first; u = dt·x, a = dt·A formed inside in
the scan's float32) and writes y and the state entering each chunk (the backward's only residual,
(K, P, N) per sequence and head); the backward walks the chunks in reverse with the same per-chunk
algebra and returns dx, ddt and dA directly, over a block of R heads of one group per program
(`heads_per_program`), so that it sums their dB and dC itself rather than writing one per head for
XLA to sum. Against a first version that took float32 u and a from XLA and left dt's, A's and the
head sums to it, the GPU-compiled bf16 B=8 step moves 116 → 94 GB. mamba_ssm's Triton kernels
(`ssd_combined.py`) split the same algebra into chunk_cumsum, chunk_state, state_passing and
chunk_scan, parallel over chunks with only the state passing serial; here each program is serial
over its K chunks (60 at full size), which keeps everything in registers and gives up parallelism
across chunks: whether that leaves the kernels latency-bound is for a GPU to measure. Written from
the equations below, not from their code.

Per sequence and head, chunk k of length Q with inputs u_s = dt_s x_s ∈ R^P, a_s = dt_s A (scalar),
B_s, C_s ∈ R^N, and S ∈ R^{P×N} the state entering the chunk (Dao & Gu 2024, arXiv:2405.21060, §6):
    cum_l  = a_0 + … + a_l                 seg_ls = a_{s+1} + … + a_l  (l ≥ s)
    tail_s = a_{s+1} + … + a_{Q-1}         T      = a_0 + … + a_{Q-1}
    y_l    = Σ_{s≤l} (C_l·B_s) exp(seg_ls) u_s + exp(cum_l) S C_l
    S'     = exp(T) S + Σ_s exp(tail_s) u_s B_sᵀ
Every exponent is a sum of a's (≤ 0), each summed directly rather than as a difference of
cumulative sums, so nothing overflows or cancels, and masked entries are exp of an empty sum
(1) set to 0: no inf anywhere, forward or backward. The backward, with dY the output cotangent and
dS' the cotangent of S' (0 after the last chunk):
    du_s  = Σ_{l≥s} (C_l·B_s) exp(seg_ls) dy_l + exp(tail_s) dS' B_s
    dB_s  = Σ_{l≥s} (dy_l·u_s) exp(seg_ls) C_l + exp(tail_s) dS'ᵀ u_s
    dC_l  = Σ_{s≤l} (dy_l·u_s) exp(seg_ls) B_s + exp(cum_l) Sᵀ dy_l
    dS    = exp(T) dS' + Σ_l exp(cum_l) dy_l C_lᵀ
and da_j from the cotangent of every exponent that contains a_j, summed directly (a difference
of row and column sums of W would cancel: 3× the float32 error of XLA's chunked scan in dA):
    da_j  = Σ_{s<j≤l} W_ls + Σ_{l≥j} exp(cum_l) dy_l·(S C_l) + Σ_{s<j} r_s + exp(T) ⟨dS', S⟩
with W_ls = (dy_l·u_s)(C_l·B_s) exp(seg_ls) and r_s = exp(tail_s) u_sᵀ dS' B_s. Through u = dt·x and
a = dt·A: dx_s = dt_s du_s, ddt_s = x_s·du_s + A da_s, and dA = Σ_s dt_s da_s (each program sums its
sequence; XLA sums the sequences).

Everything inside is broadcast products and sums in the scan's dtype (float32), no `dot`: most
contractions are over P or N of 4 or 8, below Triton's 16×16×16 minimum for tensor-core dots, and
a float32 `dot` there would run in TF32 unless told otherwise; the arithmetic is not what bounds
this scan. The kernels compile with Pallas's Triton backend on a GPU; on a CPU they run in
Pallas's interpreter (`interpret=True`), which is how the test suite checks them against the
float64 sequential oracle. The model refuses `scan: pallas` without a GPU rather than interpret
silently (minutes per step). A pallas_call is opaque to XLA's SPMD partitioner: data parallel
training runs it per device under shard_map, and the trainer refuses it with train.mesh.fsdp > 1.

JAX 0.11 deprecated Pallas's Triton backend (Pallas changelog, "Released with JAX 0.11.0": it will
be removed in a future version, and each lowering warns "The Pallas Triton backend is deprecated").
These kernels stay on it: it runs on every GPU from compute capability 8.0 (A100, RTX 4090), where
Mosaic GPU needs 9.0 (H100, H200). A JAX without the Triton backend will need a Mosaic GPU form of
them; `scan: chunked`, the configs' default, does not depend on it.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

# The forward: one warp group per program; the largest live tensor is Q·Q·max(P, N, Q) = 4,096
# values at full size (node stream: Q = 16, P = 8, N = 16), 32 registers per thread at 128 threads.
# The backward holds more of them at once (and a state cotangent per head of its block): at 4 warps
# ptxas spills it at the full-size shapes (255 registers, ~100-150 bytes a thread), at 8 it does
# not (BENCHMARKS.md, ptxas for sm_90a through benchmarks/gpu_aot.py); which runs faster, a GPU
# has yet to time. num_stages=2 lets Triton pipeline the loop's loads where it applies (they do
# not depend on the state); whether it does, for loads that feed no dot, is unmeasured.
COMPILER_PARAMS = pl_triton.CompilerParams(num_warps=4, num_stages=2)
BACKWARD_COMPILER_PARAMS = pl_triton.CompilerParams(num_warps=8, num_stages=2)
# The backward's programs, at least: about 8 per SM on a 132-SM H100 or H200, when the grid can
# give them (heads_per_program).
MIN_PROGRAMS = 1024


def _iota(shape: tuple[int, ...], axis: int) -> jax.Array:
    return jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _sum_where(mask: jax.Array, a_j: jax.Array) -> jax.Array:
    """Σ_j mask[..., j] · a_j over the last axis, with a_j broadcast from (Q,)."""
    return jnp.sum(jnp.where(mask, a_j, 0.0), axis=-1)


def _chunk_sums(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """For one chunk's a (Q,): cum (Q,), exp(seg) masked to l ≥ s (Q, Q), tail (Q,), T (scalar).

    Each is a masked sum of the a's themselves (module docstring), never a difference."""
    q = a.shape[0]
    l2, s2 = _iota((q, q), 0), _iota((q, q), 1)
    cum = _sum_where(s2 <= l2, a[None, :])  # (Q,): rows l, summing a_j for j <= l
    tail = _sum_where(s2 > l2, a[None, :])  # (Q,): rows s, summing a_j for j > s
    l3, s3, j3 = _iota((q, q, q), 0), _iota((q, q, q), 1), _iota((q, q, q), 2)
    seg = _sum_where((s3 < j3) & (j3 <= l3), a[None, None, :])  # (Q, Q): [l, s] = a_{s+1} + .. + a_l
    decay = jnp.where(s2 <= l2, jnp.exp(seg), 0.0)  # (Q, Q): 0 above the diagonal, no inf
    return cum, decay, tail, jnp.sum(a)


def _pairwise(left: jax.Array, right: jax.Array) -> jax.Array:
    """[l, s] = left_l · right_s for left (Q, D), right (Q, D) -> (Q, Q)."""
    return jnp.sum(left[:, None, :] * right[None, :, :], axis=-1)


def _forward_kernel(x_ref, dt_ref, A_ref, b_ref, c_ref, y_ref, states_ref, *, chunk: int, chunks: int):
    """One (sequence, head): x (L, P), dt (L,), A (1,), B/C (L, N) -> y (L, P) in x's dtype and the
    entering states (K, P, N). u = dt·x and a = dt·A are formed here, in dt's dtype (the scan's),
    from x, B and C in theirs (bfloat16 under bf16 compute: half the bytes of float32 copies),
    each the head's or group's columns of the packed xBC."""
    headdim, state, scan = x_ref.shape[-1], b_ref.shape[-1], dt_ref.dtype
    A = A_ref[0]

    def one_chunk(k, S):  # S (P, N): the state entering chunk k
        rows = pl.ds(k * chunk, chunk)
        dt = dt_ref[rows]  # (Q,)
        u, a = dt[:, None] * x_ref[rows, :].astype(scan), dt * A  # (Q, P), (Q,)
        Bk, Ck = b_ref[rows, :].astype(scan), c_ref[rows, :].astype(scan)  # (Q, N)
        states_ref[k] = S
        cum, decay, tail, T = _chunk_sums(a)
        weights = _pairwise(Ck, Bk) * decay  # (Q, Q): (C_l·B_s) exp(seg_ls)
        y_diag = jnp.sum(weights[:, :, None] * u[None, :, :], axis=1)  # (Q, P)
        SC = jnp.sum(S[None, :, :] * Ck[:, None, :], axis=-1)  # (Q, P): S C_l
        y_ref[rows, :] = (y_diag + jnp.exp(cum)[:, None] * SC).astype(y_ref.dtype)
        inject = (u * jnp.exp(tail)[:, None])[:, :, None] * Bk[:, None, :]  # (Q, P, N)
        return jnp.exp(T) * S + jnp.sum(inject, axis=0)  # (P, N): the state leaving chunk k

    jax.lax.fori_loop(0, chunks, one_chunk, jnp.zeros((headdim, state), scan))


def _backward_chunk(u, a, Bk, Ck, S, dy, dS, chunk: int):
    """One chunk of one head: the module docstring's backward equations. u, dy (Q, P); a (Q,);
    B, C (Q, N); S the state entering the chunk and dS the cotangent of the state leaving it (P, N)
    -> du (Q, P), da (Q,), this head's dB, dC (Q, N), and the cotangent of the entering state."""
    l2, s2 = _iota((chunk, chunk), 0), _iota((chunk, chunk), 1)
    cum, decay, tail, T = _chunk_sums(a)
    e_cum, e_tail, e_T = jnp.exp(cum), jnp.exp(tail), jnp.exp(T)

    CB = _pairwise(Ck, Bk)  # (Q, Q): C_l·B_s
    dyu = _pairwise(dy, u) * decay  # (Q, Q): (dy_l·u_s) exp(seg_ls), 0 for l < s
    dSB = jnp.sum(dS[None, :, :] * Bk[:, None, :], axis=-1)  # (Q, P): dS' B_s
    du = jnp.sum((CB * decay)[:, :, None] * dy[:, None, :], axis=0) + e_tail[:, None] * dSB
    dSu = jnp.sum(dS[None, :, :] * u[:, :, None], axis=1)  # (Q, N): dS'ᵀ u_s
    dB = jnp.sum(dyu[:, :, None] * Ck[:, None, :], axis=0) + e_tail[:, None] * dSu
    Sdy = jnp.sum(S[None, :, :] * dy[:, :, None], axis=1)  # (Q, N): Sᵀ dy_l
    dC = jnp.sum(dyu[:, :, None] * Bk[None, :, :], axis=1) + e_cum[:, None] * Sdy

    # da_j: each exponent's cotangent, summed over the exponents that contain a_j
    W = dyu * CB  # (Q, Q): seg_ls contains a_j for s < j <= l
    j3, l3, s3 = _iota((chunk,) * 3, 0), _iota((chunk,) * 3, 1), _iota((chunk,) * 3, 2)
    da = jnp.sum(jnp.sum(jnp.where((s3 < j3) & (j3 <= l3), W[None, :, :], 0.0), axis=-1), axis=-1)
    SC = jnp.sum(S[None, :, :] * Ck[:, None, :], axis=-1)  # (Q, P): S C_l
    off = e_cum * jnp.sum(dy * SC, axis=-1)  # (Q,): cum_l contains a_j for j <= l
    r = e_tail * jnp.sum(u * dSB, axis=-1)  # (Q,): tail_s contains a_j for j > s
    da += _sum_where(s2 >= l2, off[None, :]) + _sum_where(s2 < l2, r[None, :]) + e_T * jnp.sum(dS * S)  # T: all

    carried = jnp.sum((e_cum[:, None] * dy)[:, :, None] * Ck[:, None, :], axis=0)  # (Q,P,N) -> (P, N)
    return du, da, dB, dC, e_T * dS + carried


def _backward_kernel(x_ref, dt_ref, A_ref, b_ref, c_ref, states_ref, dy_ref,
                     dx_ref, ddt_ref, dA_ref, db_ref, dc_ref, *, chunk: int, chunks: int):
    """One sequence and a block of R heads of one group (the refs' head axis), chunks in reverse
    and, within a chunk, the heads in turn, each carrying its own state cotangent: the block's
    dB and dC are summed here, one (Q, N) write per chunk instead of R. From u = dt·x and
    a = dt·A: dx = dt du, ddt = x·du + A da, and this sequence's share of dA, Σ_t dt da."""
    heads, headdim, state, scan = dx_ref.shape[1], dx_ref.shape[2], b_ref.shape[-1], dt_ref.dtype

    def one_chunk(i, carried):  # per head: (cotangent of the state leaving chunk k (P, N), dA so far)
        k = chunks - 1 - i
        rows = pl.ds(k * chunk, chunk)
        Bk, Ck = b_ref[rows, :].astype(scan), c_ref[rows, :].astype(scan)
        dB_sum = dC_sum = jnp.zeros((chunk, state), scan)
        entering = []
        for h, (dS, dA) in enumerate(carried):
            x = x_ref[rows, pl.ds(h * headdim, headdim)].astype(scan)  # (Q, P): head h's columns of the block
            dt, A = dt_ref[rows, h], A_ref[h]  # (Q,), scalar
            du, da, dB, dC, dS_in = _backward_chunk(dt[:, None] * x, dt * A, Bk, Ck, states_ref[h, k],
                                                    dy_ref[rows, h, :].astype(scan), dS, chunk)
            dx_ref[rows, h, :] = (dt[:, None] * du).astype(dx_ref.dtype)
            ddt_ref[rows, h] = (jnp.sum(x * du, axis=-1) + A * da).astype(ddt_ref.dtype)
            dB_sum, dC_sum = dB_sum + dB, dC_sum + dC
            entering.append((dS_in, dA + jnp.sum(dt * da)))
        db_ref[rows, :] = dB_sum.astype(db_ref.dtype)
        dc_ref[rows, :] = dC_sum.astype(dc_ref.dtype)
        return tuple(entering)

    zero = (jnp.zeros((headdim, state), scan), jnp.zeros((), scan))
    carried = jax.lax.fori_loop(0, chunks, one_chunk, (zero,) * heads)
    for h, (_, dA) in enumerate(carried):
        dA_ref[h] = dA.astype(dA_ref.dtype)


def _packed_specs(width: int, groups: int, state: int, length: int, heads_per_program: int, headdim: int,
                  heads: int):
    """BlockSpecs reading x, B and C in place from the packed xBC (B, L', width), columns
    [x | B | C] as the mixer's conv output holds them, over a grid (sequence i, block j of
    `heads_per_program` heads of one group): block j's x columns, its group's B and C columns. A
    block index counts blocks of N columns, so B must start at a multiple of N (fused_scan)."""
    r, per_group = heads_per_program, heads // groups
    b_column = (width - 2 * groups * state) // state  # B's first column, in blocks of N; C's is G blocks on
    x_spec = pl.BlockSpec((None, length, r * headdim), lambda i, j: (i, 0, j))
    b_spec = pl.BlockSpec((None, length, state), lambda i, j: (i, 0, b_column + j * r // per_group))
    c_spec = pl.BlockSpec((None, length, state), lambda i, j: (i, 0, b_column + groups + j * r // per_group))
    return x_spec, b_spec, c_spec


def _specs(width: int, heads: int, headdim: int, groups: int, state: int, length: int):
    """The forward's BlockSpecs over the grid (sequence i, head h): each program sees its whole
    sequence (x, dt, B, C from xBC, and y) and its head's A."""
    x_spec, b_spec, c_spec = _packed_specs(width, groups, state, length, 1, headdim, heads)
    y_spec = pl.BlockSpec((None, length, None, headdim), lambda i, h: (i, 0, h, 0))
    dt_spec = pl.BlockSpec((None, length, None), lambda i, h: (i, 0, h))
    A_spec = pl.BlockSpec((1,), lambda i, h: (h,))
    return x_spec, b_spec, c_spec, y_spec, dt_spec, A_spec


def _states_spec(chunks: int, headdim: int, state: int) -> pl.BlockSpec:
    return pl.BlockSpec((None, None, chunks, headdim, state), lambda i, h: (i, h, 0, 0, 0))


def _forward(xbc, dt, A, chunk: int, interpret: bool, headdim: int, groups: int, state: int):
    batch, length, heads = dt.shape
    chunks = length // chunk
    x_spec, b_spec, c_spec, y_spec, dt_spec, A_spec = _specs(xbc.shape[-1], heads, headdim, groups, state, length)
    return pl.pallas_call(
        functools.partial(_forward_kernel, chunk=chunk, chunks=chunks),
        out_shape=(jax.ShapeDtypeStruct((batch, length, heads, headdim), xbc.dtype),  # y (B, L', H, P)
                   jax.ShapeDtypeStruct((batch, heads, chunks, headdim, state), dt.dtype)),  # entering states
        grid=(batch, heads),
        in_specs=[x_spec, dt_spec, A_spec, b_spec, c_spec],
        out_specs=(y_spec, _states_spec(chunks, headdim, state)),
        compiler_params=COMPILER_PARAMS, interpret=interpret, name="ssd_forward",
    )(xbc, dt, A, xbc, xbc)


def heads_per_program(sequences: int, heads: int, groups: int) -> int:
    """The backward kernel's heads per program, R: the largest power of 2 dividing a group's heads
    that leaves at least MIN_PROGRAMS programs (sequences · heads / R), 1 when none does. More
    heads per program sum more of the per-head dB, dC inside (fewer bytes); fewer programs
    leave SMs idle and make each program longer."""
    per_group, r = heads // groups, 1
    while per_group % (2 * r) == 0 and sequences * heads // (2 * r) >= MIN_PROGRAMS:
        r *= 2
    return r


def _backward(xbc, dt, A, states, dy, chunk: int, interpret: bool, headdim: int, groups: int, state: int,
              heads_per_block: int | None):
    batch, length, heads = dt.shape
    chunks, per_group = length // chunk, heads // groups
    r = heads_per_program(batch, heads, groups) if heads_per_block is None else heads_per_block
    if per_group % r:
        raise ValueError(f"heads per program {r} must divide the {per_group} heads of a group")
    x_spec, b_spec, c_spec = _packed_specs(xbc.shape[-1], groups, state, length, r, headdim, heads)
    dy_spec = pl.BlockSpec((None, length, r, headdim), lambda i, j: (i, 0, j, 0))
    dt_spec = pl.BlockSpec((None, length, r), lambda i, j: (i, 0, j))
    A_spec = pl.BlockSpec((r,), lambda i, j: (j,))
    states_spec = pl.BlockSpec((None, r, chunks, headdim, state), lambda i, j: (i, j, 0, 0, 0))
    per_block_n = pl.BlockSpec((None, length, None, state), lambda i, j: (i, 0, j, 0))
    dx, ddt, dA, dB, dC = pl.pallas_call(
        functools.partial(_backward_kernel, chunk=chunk, chunks=chunks),
        out_shape=(jax.ShapeDtypeStruct(dy.shape, xbc.dtype),  # dx (B, L', H, P)
                   jax.ShapeDtypeStruct(dt.shape, dt.dtype),  # ddt (B, L', H)
                   jax.ShapeDtypeStruct((batch, heads), dt.dtype),  # dA per sequence
                   jax.ShapeDtypeStruct((batch, length, heads // r, state), dt.dtype),  # dB per block of heads
                   jax.ShapeDtypeStruct((batch, length, heads // r, state), dt.dtype)),  # dC per block
        grid=(batch, heads // r),
        in_specs=[x_spec, dt_spec, A_spec, b_spec, c_spec, states_spec, dy_spec],
        out_specs=(dy_spec, dt_spec, pl.BlockSpec((None, r), lambda i, j: (i, j)), per_block_n, per_block_n),
        compiler_params=BACKWARD_COMPILER_PARAMS, interpret=interpret, name="ssd_backward",
    )(xbc, dt, A, xbc, xbc, states, dy)
    if heads // r > groups:  # blocks smaller than a group: sum each group's blocks
        to_groups = functools.partial(jnp.sum, axis=3)  # (B, L, G, blocks per group, N) -> (B, L, G, N)
        dB = to_groups(rearrange(dB, "b l (g r) n -> b l g r n", g=groups))
        dC = to_groups(rearrange(dC, "b l (g r) n -> b l g r n", g=groups))
    pad = jnp.zeros((batch, length, xbc.shape[-1] - heads * headdim - 2 * groups * state), xbc.dtype)
    packed = [rearrange(dx, "b l h p -> b l (h p)"), pad, rearrange(dB, "b l g n -> b l (g n)"),
              rearrange(dC, "b l g n -> b l (g n)")]  # xBC's cotangent, [dx | 0 | dB | dC]
    dxbc = jnp.concatenate([t.astype(xbc.dtype) for t in packed], axis=-1)
    return dxbc, ddt, jnp.sum(dA, axis=0).astype(A.dtype)


def hbm_bytes(x_shape: tuple[int, ...], groups: int, state: int, chunk: int, itemsize: int = 4,
              scan_itemsize: int = 4, heads_per_block: int | None = None) -> dict[str, int]:
    """The kernels' logical bytes for x of shape (B, L', H, P) in a dtype of `itemsize` bytes (x,
    y, dy, dx, B, C) and the scan's dtype of `scan_itemsize` (dt, ddt, states, dB and dC as
    written): every operand block read once per program and every result written once; the
    forward reads B and C once per head (a group's heads share them; a cache may serve some of
    those reads), the backward once per block of R heads (heads_per_program) and writes dB, dC
    once per block, which XLA then sums over each group's blocks (nothing to sum when a block is a
    whole group). A's and dA's few bytes are left out. What benchmarks/roofline.py adds for scan
    pallas. Not DRAM traffic: a program reads its rows strided through the (B, L', H, ·) layout,
    dt and ddt one value every H values, so whole 32-byte sectors move for a few bytes each (the
    GPU's own counters say how many)."""
    batch, length, heads, headdim = x_shape
    r = heads_per_program(batch, heads, groups) if heads_per_block is None else heads_per_block
    x = batch * length * heads * headdim * itemsize  # x, y, dy, dx
    dt = batch * length * heads * scan_itemsize  # dt, ddt
    bc = batch * length * heads * state * itemsize  # B or C as the forward's programs read them
    db = batch * length * (heads // r) * state * scan_itemsize  # dB or dC as the backward writes them
    states = batch * heads * (length // chunk) * headdim * state * scan_itemsize
    grouped = batch * length * groups * state * scan_itemsize  # dB or dC after the group sum
    group_sum = 2 * (db + grouped) if heads // r > groups else 0
    forward = (x + dt + 2 * bc) + (x + states)
    backward = (x + dt + 2 * bc // r + states + x) + (x + dt + 2 * db) + group_sum
    return {"forward": forward, "backward": backward}


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8))
def fused_scan(xbc, dt, A, chunk: int, interpret: bool, headdim: int, groups: int, state: int,
               heads_per_block: int | None = None) -> jax.Array:
    """y (B, L', H, P) in xBC's dtype from the packed xBC = [x | B | C] (B, L', W) with B's first
    column a multiple of N (columns of zeros after x where H·P is not; W = that + 2·G·N),
    dt (B, L', H) and A (H,), with L' a multiple of `chunk`; dt and A in the scan's dtype, xBC in
    its own (jaxbrr/ssm.py ssd_pallas_xbc prepares them). heads_per_block: the backward's heads per
    program (None: heads_per_program's choice)."""
    return _forward(xbc, dt, A, chunk, interpret, headdim, groups, state)[0]


def _fused_scan_fwd(xbc, dt, A, chunk, interpret, headdim, groups, state, heads_per_block):
    y, states = _forward(xbc, dt, A, chunk, interpret, headdim, groups, state)
    return y, (xbc, dt, A, states)


def _fused_scan_bwd(chunk, interpret, headdim, groups, state, heads_per_block, residuals, dy):
    xbc, dt, A, states = residuals
    return _backward(xbc, dt, A, states, dy.astype(xbc.dtype), chunk, interpret, headdim, groups, state,
                     heads_per_block)


fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)


def pallas_calls(jaxpr) -> list:
    """Every pallas_call equation in a (closed) jaxpr and the jaxprs nested in its equations: the
    kernels a traced program calls, with their grids and BlockSpecs (benchmarks/gpu_aot.py, tests)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    found += pallas_calls(sub)
    return found


def on_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


@contextlib.contextmanager
def lowering_without_a_gpu(device_kind: str = "NVIDIA H200", cores: int = 132):
    """Lowering the kernels for a GPU on a machine that has none (the lowering tests,
    benchmarks/gpu_aot.py). Pallas's Triton lowering takes the target's compute capability from a
    GPU device; jax 0.10 fell back to 9.0 without one, jax 0.11 raises ("No supported GPU devices
    found, please specify an abstract GPU device", jax/_src/pallas/triton/
    pallas_call_registration.py) unless an abstract one is in force: a one-device mesh of it, axis
    type Auto, as a topology's own abstract mesh (Explicit would make an eager op in the traced
    function need its lowering platforms). The H100 and H200 are both compute capability 9.0."""
    device = jax.sharding.AbstractDevice(device_kind=device_kind, num_cores=cores, platform="gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("device",), (jax.sharding.AxisType.Auto,), abstract_device=device)
    with jax.sharding.use_abstract_mesh(mesh):
        yield


def require_gpu() -> None:
    """The one refusal of `scan: pallas` off a GPU (the model's scan and the trainer, which checks
    before it compiles): the kernels compile for Triton only, and interpreting them would take
    minutes per step."""
    if not on_gpu():
        raise ValueError(f"model.ssm.scan=pallas compiles Triton kernels for a GPU, and JAX's default backend is "
                         f"{jax.default_backend()!r}: set model.ssm.scan=chunked (the same algorithm in XLA)")
