"""The Mamba-2 selective scan (SSD), as pure functions: no parameters, no state.

Glossary
    B  batch (for the model: batch · electrodes or batch · edges)
    L  sequence length (time steps)
    H  heads;  P  head dim (H · P = d_inner)
    N  state size (d_state)
    G  groups of B/C; head h reads group h // (H / G)
    Q  chunk length (chunk_size);  K  number of chunks = ceil(L / Q)
    R  heads per group = H / G

The recurrence, per batch and head (state h_t ∈ R^{P×N}):
    h_t = exp(dt_t · A) h_{t-1} + dt_t · x_t B_tᵀ,        y_t = h_t C_t
`ssd_chunked` computes it with the chunked "state space duality" algorithm of Dao & Gu 2024,
"Transformers are SSMs" (arXiv:2405.21060), Listing 1 (`mamba_ssm/modules/ssd_minimal.py`);
`ssd_sequential` runs it step by step with `jax.lax.scan` and is the oracle. Neither adds D·x.
`ssd_pallas` runs `ssd_chunked`'s algorithm as the fused Pallas kernels of jaxbrr/ssd_kernel.py
(scan `pallas`, GPU).
`chunked_mask_after_exp` is `ssd_chunked` masking the within-chunk decay after exp, as mamba_ssm's
`chunk_scan_ref`: a NaN-gradient hazard kept for the NaN localiser (ssm_gnn_anchors.md §6.2),
never a default.
The twin of torchref/ssm.py: same functions, same order, same einops patterns.

dt must already be softplus'ed (and biased); A is negative. The scan runs in the widest input
dtype and at least float32, and returns y in x's dtype: dt, A, cumulative sums and decays must not
be bfloat16 (a bfloat16 cumsum of 960 dA values is off by up to 1.4, a 300 % decay error; mamba_ssm's
Triton kernels keep them in float32 too). float64 (jax_enable_x64) stays float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange

from common.constants import SCANS


def at_least_float32(t: jax.Array) -> jax.Array:
    """bfloat16/float16 -> float32; float32 and float64 unchanged."""
    return t.astype(jnp.promote_types(t.dtype, jnp.float32))


def _scan_dtype(*arrays: jax.Array) -> jnp.dtype:
    """The dtype a scan runs in: the widest of its inputs', and at least float32."""
    dtype = jnp.dtype(jnp.float32)
    for t in arrays:
        dtype = jnp.promote_types(dtype, t.dtype)
    return dtype


def _to_scan_dtype(*arrays: jax.Array) -> list[jax.Array]:
    """All inputs in the scan's dtype."""
    dtype = _scan_dtype(*arrays)
    return [t.astype(dtype) for t in arrays]


def segsum(a: jax.Array) -> jax.Array:
    """Segment sums out[..., i, j] = a[..., j+1] + ... + a[..., i] for i >= j, -inf for i < j.

    Built as a masked cumsum (not cumsum_i - cumsum_j, which cancels catastrophically) and
    masked with -inf *before* anyone takes exp: exp(segsum) is then exactly 0 above the diagonal
    with a zero gradient (d exp(x) = exp(x) = 0 at -inf; -inf is not NaN, so jax_debug_nans stays
    quiet). Taking exp of the unmasked differences and masking afterwards overflows to inf above
    the diagonal and turns the backward pass into 0 · inf = NaN.
    """
    T = a.shape[-1]
    rows, cols = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    summands = jnp.broadcast_to(a[..., :, None], (*a.shape, T))  # (..., T, T): [k, j] = a_k
    summands = jnp.where(rows > cols, summands, 0.0)  # keep a_k only for k > j
    out = jnp.cumsum(summands, axis=-2)  # (..., T, T): [i, j] = sum_{j<k<=i} a_k
    return jnp.where(rows >= cols, out, -jnp.inf)


def _check_shapes(x, dt, A, B, C) -> tuple[int, int]:
    batch, length, heads, _ = x.shape
    groups = B.shape[2]
    if dt.shape != (batch, length, heads) or A.shape != (heads,):
        raise ValueError(f"dt {tuple(dt.shape)} / A {tuple(A.shape)} do not match x {tuple(x.shape)}")
    if B.shape != C.shape or B.shape[:2] != (batch, length) or heads % groups:
        raise ValueError(f"B {tuple(B.shape)} / C {tuple(C.shape)} do not match x {tuple(x.shape)}")
    return heads, groups


def _pad_to_chunks(chunk_size: int, x, dt, B, C) -> tuple[jax.Array, ...]:
    """Length L padded at the end to a multiple of chunk_size L': dt = 0 and x = B = C = 0 there
    (what mamba_ssm's `_chunk_cumsum_fwd_kernel` does beyond seqlen): a = 0, nothing injected."""
    pad = -x.shape[1] % chunk_size
    if not pad:
        return x, dt, B, C
    x, B, C = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (x, B, C))  # (B, L', ., .)
    return x, jnp.pad(dt, ((0, 0), (0, pad), (0, 0))), B, C  # dt (B, L', H)


def ssd_chunked(x, dt, A, B, C, chunk_size: int, mask_after_exp: bool = False) -> jax.Array:
    """Chunked SSD scan. x (B,L,H,P), dt (B,L,H), A (H,), B/C (B,L,G,N) -> y (B,L,H,P).

    When chunk_size does not divide L the sequence is padded at the end with dt = 0 and
    x = B = C = 0 (what mamba_ssm's `_chunk_cumsum_fwd_kernel` does beyond seqlen) and cut back.
    C·B is computed once per group and shared by its heads.

    mask_after_exp=True (scan `chunked_mask_after_exp`) is a HAZARD kept for the NaN localiser's
    exp-mask scenario (ssm_gnn_anchors.md §6.2), never a default: the within-chunk weights are
    C·B · exp(a_cumsum_l - a_cumsum_s) for all (l, s), masked to l >= s afterwards, as mamba_ssm's
    `chunk_scan_ref`. Same forward, but once a chunk's sum of dt·A falls below about -88 (float32)
    or -709 (float64) exp overflows above the diagonal and the backward is 0 · inf = NaN.
    """
    heads, groups = _check_shapes(x, dt, A, B, C)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = x.dtype
    length = x.shape[1]
    x, dt, A, B, C = _to_scan_dtype(x, dt, A, B, C)

    x, dt, B, C = _pad_to_chunks(chunk_size, x, dt, B, C)  # (B, L', H, P) (B, L', H) (B, L', G, N) ×2

    r = heads // groups
    xdt = x * dt[..., None]  # (B, L', H, P): dt_t x_t
    xdt = rearrange(xdt, "b (k q) (g r) p -> b k q g r p", q=chunk_size, r=r)  # (B, K, Q, G, R, P)
    B = rearrange(B, "b (k q) g n -> b k q g n", q=chunk_size)  # (B, K, Q, G, N)
    C = rearrange(C, "b (k q) g n -> b k q g n", q=chunk_size)  # (B, K, Q, G, N)
    a = rearrange(dt * A, "b (k q) (g r) -> b g r k q", q=chunk_size, r=r)  # (B, G, R, K, Q): dt·A <= 0
    a_cumsum = jnp.cumsum(a, axis=-1)  # (B, G, R, K, Q)

    # 1. Within each chunk (diagonal blocks): y_l = sum_{s<=l} (C_l·B_s) exp(a_{s+1}+..+a_l) dt_s x_s
    CB = jnp.einsum("bklgn,bksgn->bgkls", C, B)  # (B, G, K, Q, Q), once per group
    if mask_after_exp:  # the hazard: inf above the diagonal, hidden by the mask in the forward only
        weights = CB[:, :, None] * jnp.exp(a_cumsum[..., :, None] - a_cumsum[..., None, :])  # (B, G, R, K, Q, Q)
        weights = jnp.where(jnp.tri(chunk_size, dtype=bool), weights, 0.0)  # (B, G, R, K, Q, Q)
    else:
        weights = CB[:, :, None] * jnp.exp(segsum(a))  # (B, G, R, K, Q, Q)
    y_diag = jnp.einsum("bgrkls,bksgrp->bklgrp", weights, xdt)  # (B, K, Q, G, R, P)

    # 2. State at the end of each chunk, from that chunk's inputs alone.
    decay_to_end = jnp.exp(a_cumsum[..., -1:] - a_cumsum)  # (B, G, R, K, Q)
    decay_to_end = rearrange(decay_to_end, "b g r k q -> b k q g r 1")  # (B, K, Q, G, R, 1)
    states = jnp.einsum("bksgrp,bksgn->bkgrpn", xdt * decay_to_end, B)  # (B, K, G, R, P, N)

    # 3. Pass states across chunks: S_k = decay_k · S_{k-1} + s_k, a linear recurrence over the K
    #    chunks, run as an associative scan (O(K) work) rather than the (K+1)² decay matrix of
    #    ssd_minimal_discrete, so the cost stays linear in L. The state entering chunk k is S_{k-1}.
    chunk_decay = rearrange(jnp.exp(a_cumsum[..., -1]), "b g r k -> b k g r 1 1")  # (B, K, G, R, 1, 1)

    def combine(left, right):
        (decay_l, state_l), (decay_r, state_r) = left, right
        return decay_l * decay_r, state_l * decay_r + state_r

    _, states = jax.lax.associative_scan(combine, (chunk_decay, states), axis=1)  # (B, K, G, R, P, N)
    states = jnp.pad(states, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]  # entering

    # 4. Contribution of the entering state to each position of the chunk.
    decay_from_start = rearrange(jnp.exp(a_cumsum), "b g r k q -> b k q g r 1")  # (B, K, Q, G, R, 1)
    y_off = jnp.einsum("bklgn,bkgrpn->bklgrp", C, states) * decay_from_start  # (B, K, Q, G, R, P)

    y = rearrange(y_diag + y_off, "b k q g r p -> b (k q) (g r) p")  # (B, L', H, P)
    return y[:, :length].astype(out_dtype)  # (B, L, H, P)


def ssd_sequential(x, dt, A, B, C) -> jax.Array:
    """The plain recurrence, one step at a time (`jax.lax.scan` over L, vectorised over batch and
    heads): the oracle. x (B,L,H,P), dt (B,L,H), A (H,), B/C (B,L,G,N) -> y (B,L,H,P).
    Its backward pass stores the state of every step, (B, L, H, P, N)."""
    heads, groups = _check_shapes(x, dt, A, B, C)
    out_dtype = x.dtype
    x, dt, A, B, C = _to_scan_dtype(x, dt, A, B, C)
    group_of_head = jnp.arange(heads) // (heads // groups)
    B = B[:, :, group_of_head]  # (B, L, H, N)
    C = C[:, :, group_of_head]  # (B, L, H, N)
    decay = jnp.exp(dt * A)  # (B, L, H)

    batch, _, _, headdim = x.shape

    def step(h, inputs):
        x_t, dt_t, decay_t, B_t, C_t = inputs
        inject = jnp.einsum("bhp,bhn->bhpn", x_t * dt_t[..., None], B_t)  # (B, H, P, N)
        h = decay_t[..., None, None] * h + inject  # (B, H, P, N)
        return h, jnp.einsum("bhpn,bhn->bhp", h, C_t)  # (B, H, P)

    h0 = jnp.zeros((batch, heads, headdim, B.shape[-1]), x.dtype)  # (B, H, P, N)
    time_major = [jnp.moveaxis(t, 1, 0) for t in (x, dt, decay, B, C)]  # L first
    _, ys = jax.lax.scan(step, h0, time_major)  # (L, B, H, P)
    return jnp.moveaxis(ys, 0, 1).astype(out_dtype)  # (B, L, H, P)


def ssd_pallas(x, dt, A, B, C, chunk_size: int, interpret: bool | None = None,
               heads_per_block: int | None = None) -> jax.Array:
    """`ssd_chunked`'s algorithm and contract as the fused Pallas kernels of jaxbrr/ssd_kernel.py:
    x (B,L,H,P), dt (B,L,H), A (H,), B/C (B,L,G,N) -> y (B,L,H,P), the same padding and scan dtype.
    The kernels read x, B and C as columns of one array, as the mixer's conv output holds them
    (`ssd_pallas_xbc`, the model's path); here they are packed into one first (a copy).

    interpret=None compiles the kernels for the GPU (Triton) and refuses other backends; True runs
    them in Pallas's interpreter on any backend, float64 included (the tests' path).
    heads_per_block: the backward kernel's heads per program (None: ssd_kernel.heads_per_program)."""
    _check_shapes(x, dt, A, B, C)
    dtype = jnp.result_type(x, B, C)
    xbc = jnp.concatenate([rearrange(x, "b l h p -> b l (h p)"), rearrange(B, "b l g n -> b l (g n)"),
                           rearrange(C, "b l g n -> b l (g n)")], axis=-1).astype(dtype)  # (B, L, H·P + 2·G·N)
    y = ssd_pallas_xbc(xbc, dt, A, x.shape[-1], B.shape[2], chunk_size, interpret, heads_per_block)
    return y.astype(x.dtype)  # (B, L, H, P)


def ssd_pallas_xbc(xbc, dt, A, headdim: int, groups: int, chunk_size: int, interpret: bool | None = None,
                   heads_per_block: int | None = None) -> jax.Array:
    """`ssd_pallas` on the packed xbc (B, L, H·P + 2·G·N), columns [x | B | C] (the mixer's conv
    output), dt (B, L, H), A (H,) -> y (B, L, H, P) in xbc's dtype: the kernels read x, B and C
    in place (a column slice handed to a kernel would be copied first), when d_inner = H·P is a
    multiple of d_state (B then starts at a whole block of N columns); otherwise from a copy with
    zero columns between x and B."""
    from jaxbrr import ssd_kernel  # Pallas loads slowly, and only this scan needs it

    batch, length, heads = dt.shape
    inner = heads * headdim
    state, odd = divmod(xbc.shape[-1] - inner, 2 * groups)
    if odd or state < 1 or heads % groups or xbc.shape[:2] != (batch, length) or A.shape != (heads,):
        raise ValueError(f"xbc {tuple(xbc.shape)} / dt {tuple(dt.shape)} / A {tuple(A.shape)} do not hold "
                         f"{heads} heads of {headdim} and {groups} groups of B, C")
    sizes = {"chunk_size": chunk_size, "headdim": headdim, "d_state": state}
    if any(n < 1 or n & (n - 1) for n in sizes.values()):  # Triton's tensors have power-of-2 sizes
        raise ValueError(f"model.ssm.scan = 'pallas' needs powers of 2 for {sizes}; use scan: chunked for other sizes")
    if interpret is None:
        ssd_kernel.require_gpu()
        interpret = False
    scan_dtype = _scan_dtype(xbc, dt, A)
    pad = -length % chunk_size  # as _pad_to_chunks: dt = 0 and x = B = C = 0 beyond L
    if pad:
        xbc, dt = jnp.pad(xbc, ((0, 0), (0, pad), (0, 0))), jnp.pad(dt, ((0, 0), (0, pad), (0, 0)))
    if inner % state:  # the kernels read B from a whole N-column block: zero columns after x (a copy)
        gap = jnp.zeros((*xbc.shape[:2], -inner % state), xbc.dtype)
        xbc = jnp.concatenate([xbc[..., :inner], gap, xbc[..., inner:]], axis=-1)
    # xbc stays in its dtype: the kernels read it so and compute u = dt·x, a = dt·A inside
    y = ssd_kernel.fused_scan(xbc, dt.astype(scan_dtype), A.astype(scan_dtype), chunk_size, interpret, headdim,
                              groups, state, heads_per_block)
    return y[:, :length]  # (B, L, H, P), xbc's dtype


def selective_scan(x, dt, A, B, C, scan: str, chunk_size: int) -> jax.Array:
    """y = SSD(x, dt, A, B, C) with the algorithm named by `scan` (config `model.ssm.scan`)."""
    if scan == "chunked":
        return ssd_chunked(x, dt, A, B, C, chunk_size)
    if scan == "sequential":
        return ssd_sequential(x, dt, A, B, C)
    if scan == "chunked_mask_after_exp":  # the localiser's NaN hazard, never a default
        return ssd_chunked(x, dt, A, B, C, chunk_size, mask_after_exp=True)
    if scan == "pallas":  # chunked, fused into Pallas kernels for a GPU
        return ssd_pallas(x, dt, A, B, C, chunk_size)
    raise ValueError(f"model.ssm.scan = {scan!r} is not one of {SCANS}")
