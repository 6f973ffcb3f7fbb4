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
`ssd_sequential` runs it step by step and is the oracle. Neither adds D·x.
`chunked_mask_after_exp` is `ssd_chunked` masking the within-chunk decay after exp, as mamba_ssm's
`chunk_scan_ref`: a NaN-gradient hazard kept for the NaN localiser (ssm_gnn_anchors.md §6.2),
never a default.

dt must already be softplus'ed (and biased); A is negative. The scan runs in the widest input
dtype and at least float32, and returns y in x's dtype: dt, A, cumulative sums and decays must not
be bfloat16 (a bfloat16 cumsum of 960 dA values is off by up to 1.4, a 300 % decay error; mamba_ssm's
Triton kernels keep them in float32 too). float64 stays float64. Both scans switch autocast off
for their own ops (`_outside_autocast`): under model.precision bfloat16 they run inside the stage's
bf16 autocast region, where every einsum (a bmm) would be cast back to bf16 and undo the upcast.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange

from common.constants import SCANS


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bfloat16/float16 -> float32; float32 and float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _to_scan_dtype(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """All inputs in one dtype: the widest of theirs, and at least float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def _outside_autocast(scan):
    """Run `scan` with autocast off on its inputs' device: its math stays in the scan dtype
    (jaxbrr's twin has no autocast; mamba_ssm's kernels accumulate in float32 as well)."""

    @functools.wraps(scan)
    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return scan(x, *args, **kwargs)

    return run


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums out[..., i, j] = a[..., j+1] + ... + a[..., i] for i >= j, -inf for i < j.

    Built as a masked cumsum (not cumsum_i - cumsum_j, which cancels catastrophically) and
    masked with -inf *before* anyone takes exp: exp(segsum) is then exactly 0 above the diagonal
    with a zero gradient. Taking exp of the unmasked differences and masking afterwards overflows
    to inf above the diagonal and turns the backward pass into 0 · inf = NaN.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    summands = a[..., :, None].expand(*a.shape, T)  # (..., T, T): [k, j] = a_k
    summands = summands.masked_fill(~ones.tril(-1), 0.0)  # keep a_k only for k > j
    out = torch.cumsum(summands, dim=-2)  # (..., T, T): [i, j] = sum_{j<k<=i} a_k
    return out.masked_fill(~ones.tril(0), -torch.inf)


def _check_shapes(x, dt, A, B, C) -> tuple[int, int]:
    batch, length, heads, _ = x.shape
    groups = B.shape[2]
    if dt.shape != (batch, length, heads) or A.shape != (heads,):
        raise ValueError(f"dt {tuple(dt.shape)} / A {tuple(A.shape)} do not match x {tuple(x.shape)}")
    if B.shape != C.shape or B.shape[:2] != (batch, length) or heads % groups:
        raise ValueError(f"B {tuple(B.shape)} / C {tuple(C.shape)} do not match x {tuple(x.shape)}")
    return heads, groups


@_outside_autocast
def ssd_chunked(x, dt, A, B, C, chunk_size: int, mask_after_exp: bool = False) -> torch.Tensor:
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

    pad = -length % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (B, L', H, P)
        dt = F.pad(dt, (0, 0, 0, pad))  # (B, L', H)
        B = F.pad(B, (0, 0, 0, 0, 0, pad))  # (B, L', G, N)
        C = F.pad(C, (0, 0, 0, 0, 0, pad))  # (B, L', G, N)

    r = heads // groups
    xdt = x * dt[..., None]  # (B, L', H, P): dt_t x_t
    xdt = rearrange(xdt, "b (k q) (g r) p -> b k q g r p", q=chunk_size, r=r)  # (B, K, Q, G, R, P)
    B = rearrange(B, "b (k q) g n -> b k q g n", q=chunk_size)  # (B, K, Q, G, N)
    C = rearrange(C, "b (k q) g n -> b k q g n", q=chunk_size)  # (B, K, Q, G, N)
    a = rearrange(dt * A, "b (k q) (g r) -> b g r k q", q=chunk_size, r=r)  # (B, G, R, K, Q): dt·A <= 0
    a_cumsum = torch.cumsum(a, dim=-1)  # (B, G, R, K, Q)

    # 1. Within each chunk (diagonal blocks): y_l = sum_{s<=l} (C_l·B_s) exp(a_{s+1}+..+a_l) dt_s x_s
    CB = torch.einsum("bklgn,bksgn->bgkls", C, B)  # (B, G, K, Q, Q), once per group
    if mask_after_exp:  # the hazard: inf above the diagonal, hidden by the mask in the forward only
        weights = CB[:, :, None] * torch.exp(a_cumsum[..., :, None] - a_cumsum[..., None, :])  # (B, G, R, K, Q, Q)
        causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=a.device).tril()
        weights = weights.masked_fill(~causal, 0.0)  # (B, G, R, K, Q, Q)
    else:
        weights = CB[:, :, None] * torch.exp(segsum(a))  # (B, G, R, K, Q, Q)
    y_diag = torch.einsum("bgrkls,bksgrp->bklgrp", weights, xdt)  # (B, K, Q, G, R, P)

    # 2. State at the end of each chunk, from that chunk's inputs alone.
    decay_to_end = torch.exp(a_cumsum[..., -1:] - a_cumsum)  # (B, G, R, K, Q)
    decay_to_end = rearrange(decay_to_end, "b g r k q -> b k q g r 1")  # (B, K, Q, G, R, 1)
    states = torch.einsum("bksgrp,bksgn->bkgrpn", xdt * decay_to_end, B)  # (B, K, G, R, P, N)

    # 3. Pass states across chunks: the state entering chunk k (zero initial state).
    states = F.pad(states, (0, 0, 0, 0, 0, 0, 0, 0, 1, 0))  # (B, K+1, G, R, P, N)
    chunk_decay = torch.exp(segsum(F.pad(a_cumsum[..., -1], (1, 0))))  # (B, G, R, K+1, K+1)
    states = torch.einsum("bgrzk,bkgrpn->bzgrpn", chunk_decay, states)[:, :-1]  # (B, K, G, R, P, N)

    # 4. Contribution of the entering state to each position of the chunk.
    decay_from_start = rearrange(torch.exp(a_cumsum), "b g r k q -> b k q g r 1")  # (B, K, Q, G, R, 1)
    y_off = torch.einsum("bklgn,bkgrpn->bklgrp", C, states) * decay_from_start  # (B, K, Q, G, R, P)

    y = rearrange(y_diag + y_off, "b k q g r p -> b (k q) (g r) p")  # (B, L', H, P)
    return y[:, :length].to(out_dtype)  # (B, L, H, P)


@_outside_autocast
def ssd_sequential(x, dt, A, B, C) -> torch.Tensor:
    """The plain recurrence, one step at a time (vectorised over batch and heads): the oracle.

    x (B,L,H,P), dt (B,L,H), A (H,), B/C (B,L,G,N) -> y (B,L,H,P). Autograd through the Python
    loop is slow (a project-size Mamba2 at B=38, L=960 on 2 CPU cores: 35 s fwd+bwd, chunked 0.4 s):
    for tests and `ssm.scan: sequential`.
    """
    heads, groups = _check_shapes(x, dt, A, B, C)
    out_dtype = x.dtype
    x, dt, A, B, C = _to_scan_dtype(x, dt, A, B, C)
    group_of_head = torch.arange(heads, device=x.device) // (heads // groups)
    B = B[:, :, group_of_head]  # (B, L, H, N)
    C = C[:, :, group_of_head]  # (B, L, H, N)
    decay = torch.exp(dt * A)  # (B, L, H)

    batch, length, _, headdim = x.shape
    h = x.new_zeros(batch, heads, headdim, B.shape[-1])  # (B, H, P, N)
    ys = []
    for t in range(length):
        inject = torch.einsum("bhp,bhn->bhpn", x[:, t] * dt[:, t, :, None], B[:, t])  # (B, H, P, N)
        h = decay[:, t, :, None, None] * h + inject  # (B, H, P, N)
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]))  # (B, H, P)
    return torch.stack(ys, dim=1).to(out_dtype)  # (B, L, H, P)


def selective_scan(x, dt, A, B, C, scan: str, chunk_size: int) -> torch.Tensor:
    """y = SSD(x, dt, A, B, C) with the algorithm named by `scan` (config `model.ssm.scan`)."""
    if scan in ("chunked", "pallas"):  # pallas: jaxbrr's fused kernels of this same algorithm
        return ssd_chunked(x, dt, A, B, C, chunk_size)
    if scan == "sequential":
        return ssd_sequential(x, dt, A, B, C)
    if scan == "chunked_mask_after_exp":  # the localiser's NaN hazard, never a default
        return ssd_chunked(x, dt, A, B, C, chunk_size, mask_after_exp=True)
    raise ValueError(f"model.ssm.scan = {scan!r} is not one of {SCANS}")
