"""Graph construction for the V3 edge stream and GNN: pure functions, no parameters.

    electrodes --edge_features--> edge weights --(edge BiMamba)--> adjacency --> Laplacian PE

Glossary: B batch, L steps (time steps of the encoder, T/16), N nodes (electrodes), E = N(N-1)/2
edges (pairs i < j, row-major), D feature width, K eigenvectors kept (the `k` argument), S the
steps where the PE is computed (0, interval, 2·interval, ...).

`torchref/graph.py` has the same functions, in the same order, with the same arguments. `guards`
is a bool here: True reproduces the original's clamps (`stability.guards: original`).
No function produces a NaN on purpose: every masked branch is kept finite (double where), so
`jax_debug_nans` stays silent on clean inputs.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from common import graph as common_graph
from common.constants import (
    CORRELATION_EPS,
    COSINE_EPS,
    ORIGINAL_COND_LIMIT,
    ORIGINAL_DEGREE_FLOOR,
    ORIGINAL_EDGE_CLAMP,
    ORIGINAL_ILL_CONDITIONED_EPSILON,
    PE_GRADIENTS,
    PE_SIGNS,
    SIGN_TIE_TOLERANCE,
)
from common.data.montage import n_edges

EIGH_CALLS = ("batched", "looped")


# ----------------------------------------------------------------------------------------------
# edges


def edge_pairs(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The E pairs i < j in row-major order: (0,1), (0,2), ..., (N-2,N-1); 171 for 19 nodes.

    Static numpy indices (trace-time constants)."""
    rows, cols = np.triu_indices(n_nodes, k=1)  # (E,), (E,)
    return rows, cols


def safe_rsqrt(x: jax.Array) -> jax.Array:
    """x^-1/2 where x > 0, else 0, with a finite gradient everywhere.

    The inner where keeps rsqrt away from 0 so its derivative is never inf; `0 * inf` would
    otherwise turn the masked branch into NaN (ssm_gnn_anchors.md §6.5).
    """
    positive = x > 0
    return jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, x, jnp.ones_like(x))), 0.0)


def edge_features(electrodes: jax.Array, kind: str, guards: bool) -> jax.Array:
    """Similarity of every electrode pair at every step: (B, N, L, D) -> (B, E, L).

    cosine      = <a, b> / (max(‖a‖, eps) · max(‖b‖, eps))
    correlation = <a', b'> / (sqrt(‖a'‖² + eps') · sqrt(‖b'‖² + eps')), a' = a − mean(a) (over D),
                  the original's formula (common/constants.py CORRELATION_EPS)

    Cosine's norms enter as rsqrt(max(‖a‖², eps²)), never as ‖a‖: the gradient of a norm at 0 is 0/0
    in JAX (NaN even behind max(‖a‖, eps), because 0·NaN = NaN), whereas ‖a‖² has gradient
    2a = 0 there and max() sends no gradient to its smaller argument. An all-zero electrode
    (flat channel, padding) thus gets similarity exactly 0 and a finite gradient b / (eps·‖b‖),
    as torch's own cosine_similarity (parity_nan_anchors.md §4.4, ssm_gnn_anchors.md §6.4).
    Correlation's as rsqrt(‖a'‖² + eps'), finite with a finite gradient everywhere: a constant
    electrode gets similarity 0 and gradient b' / (sqrt(eps')·‖b'‖) before the centring's.
    """
    if kind == "correlation":
        electrodes = electrodes - electrodes.mean(axis=-1, keepdims=True)
    elif kind != "cosine":
        raise ValueError(f"graph.edge_features must be 'cosine' or 'correlation', got {kind!r}")
    n_nodes = electrodes.shape[1]
    rows, cols = edge_pairs(n_nodes)
    dots = jnp.einsum("bnld,bmld->blnm", electrodes, electrodes)  # (B, L, N, N)
    squared_norms = (electrodes * electrodes).sum(axis=-1)  # (B, N, L)
    if kind == "correlation":
        inverse_norms = jax.lax.rsqrt(squared_norms + CORRELATION_EPS)  # (B, N, L)
    else:
        inverse_norms = jax.lax.rsqrt(jnp.maximum(squared_norms, COSINE_EPS**2))
    inverse_norms = rearrange(inverse_norms, "b n l -> b l n")  # (B, L, N)
    similarity = dots[..., rows, cols] * inverse_norms[..., rows]  # (B, L, E)
    similarity = similarity * inverse_norms[..., cols]
    similarity = rearrange(similarity, "b l e -> b e l")  # (B, E, L)
    if guards:
        similarity = jnp.clip(similarity, -ORIGINAL_EDGE_CLAMP, ORIGINAL_EDGE_CLAMP)
    return similarity


# ----------------------------------------------------------------------------------------------
# adjacency and Laplacian


def adjacency(edge_weights: jax.Array, n_nodes: int, top_k: int, threshold: float) -> jax.Array:
    """Sparse symmetric adjacency of every (sample, step) graph: (B, E, L) -> (B, L, N, N).

    As the original (original_spec.md §2): fill A[i, j] = A[j, i] = w_ij (zero diagonal); keep
    the top_k entries of each row; zero the entries <= threshold; symmetrise (A + Aᵀ)/2; put 1
    on the diagonal of each row whose sum is < threshold (a node without an edge keeps itself).
    A NaN weight is not <= threshold, so it stays (top-k ranks NaN first in both frameworks):
    a NaN born in the edge stream reaches the graph, where `dense > threshold` had dropped it
    in silence and left an empty graph (the localiser then blamed the PE's eigenvalues).

    Ties: jax.lax.top_k keeps the lowest indices among equal entries of a row (its documented
    rule); torchref keeps the same by a stable sort (torch.topk has no rule). Exact ties above the
    threshold are real: a flat window gives every electrode the same features, hence equal
    similarities.
    """
    if edge_weights.shape[1] != n_edges(n_nodes):
        raise ValueError(
            f"edge_weights has {edge_weights.shape[1]} edges, {n_nodes} nodes need {n_edges(n_nodes)}"
        )
    if not 1 <= top_k <= n_nodes:
        raise ValueError(f"graph.top_k must be in [1, {n_nodes}], got {top_k}")
    batch, _, steps = edge_weights.shape
    rows, cols = edge_pairs(n_nodes)
    weights = rearrange(edge_weights, "b e l -> b l e")  # (B, L, E)
    dense = jnp.zeros((batch, steps, n_nodes, n_nodes), edge_weights.dtype)  # (B, L, N, N)
    dense = dense.at[..., rows, cols].set(weights)
    dense = dense.at[..., cols, rows].set(weights)
    # NaN of either sign ranks first (XLA's total order puts a negative NaN, what 0·inf gives on
    # x86, last; torch ranks every NaN first): the ranking only, no value changes
    _, top_index = jax.lax.top_k(jnp.where(jnp.isnan(dense), jnp.inf, dense), top_k)  # (B, L, N, top_k)
    keep = (top_index[..., :, None] == jnp.arange(n_nodes)).any(axis=-2)  # (B, L, N, N)
    dense = jnp.where(keep & ~(dense <= threshold), dense, 0.0)  # NaN is not <= threshold: kept
    dense = 0.5 * (dense + jnp.swapaxes(dense, -1, -2))
    isolated = dense.sum(axis=-1) < threshold  # (B, L, N)
    return dense + isolated.astype(dense.dtype)[..., :, None] * jnp.eye(n_nodes, dtype=dense.dtype)


def _laplacian_unshifted(A: jax.Array, degree_floor: float | None) -> jax.Array:
    """I − D^-1/2 A D^-1/2 without the epsilon shift (see normalized_laplacian)."""
    n_nodes = A.shape[-1]
    eye = jnp.eye(n_nodes, dtype=A.dtype)
    degree = A.sum(axis=-1)  # (..., N) row sums
    if degree_floor is None:
        inverse_sqrt = safe_rsqrt(degree)
    else:  # the original's guard: a node of degree 0 (an A without adjacency's fallback) gets 1/sqrt(1e-6)
        inverse_sqrt = jax.lax.rsqrt(jnp.maximum(degree, degree_floor))
    return eye - inverse_sqrt[..., :, None] * A * inverse_sqrt[..., None, :]


def normalized_laplacian(A: jax.Array, epsilon: float) -> jax.Array:
    """L = I − D^-1/2 A D^-1/2 + epsilon·I, (..., N, N) -> (..., N, N).

    The original's, self-loops kept (common/graph.py normalized_laplacian says what that means
    for an isolated node, and how PyG's differs). A node of degree 0 gets D^-1/2 = 0 through the
    gradient-safe where (safe_rsqrt), not PyG's pow(-0.5) + masked_fill, whose gradient is NaN.
    """
    n_nodes = A.shape[-1]
    eye = jnp.eye(n_nodes, dtype=A.dtype)
    return _laplacian_unshifted(A, degree_floor=None) + epsilon * eye


# ----------------------------------------------------------------------------------------------
# eigenvectors


def per_matrix(fn, matrices: jax.Array, calls: str):
    """fn on a stack of matrices (..., N, N): one call on the whole stack (`batched`), or
    (`looped`) one call per matrix under lax.map, outputs restacked to the leading shape.

    For LAPACK-backed fn (eigh, cond) both give the same numbers: the same routine runs on each
    matrix. `looped` exists for XLA:CPU with several (forced) host devices: jaxlib 0.10.2's
    batched LAPACK kernels split their batch over the intra-op thread pool and block until it is
    done (jax::ParallelBatchMap), so when every pool thread is one device's blocked call the
    program never returns. One matrix per call never waits on the pool. On GPUs and one CPU
    device keep `batched` (one solver call instead of B·S)."""
    if calls not in EIGH_CALLS:
        raise ValueError(f"graph.eigh_calls must be one of {EIGH_CALLS}, got {calls!r}")
    if calls == "batched":
        return fn(matrices)
    lead = matrices.shape[:-2]
    out = jax.lax.map(fn, matrices.reshape(-1, *matrices.shape[-2:]))
    return jax.tree.map(lambda o: o.reshape(*lead, *o.shape[1:]), out)


def _eigh(matrices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """jnp.linalg.eigh(matrices, symmetrize_input=False): ascending eigenvalues, eigenvectors.
    Called as lax.linalg.eigh, the primitive jnp's wrapper binds, because that wrapper is a jit of
    its own and an op traced inside a jit records no frame above it: a NaN in eigh's derivative
    would be reported at jax/_src/numpy/linalg.py, never at this file's lines that called it
    (checkify and JAX_DEBUG_NANS, jax 0.10.2)."""
    vectors, values = jax.lax.linalg.eigh(matrices, lower=True, symmetrize_input=False)
    return values, vectors


def _lapack_eigh(matrices: jax.Array, calls: str) -> tuple[jax.Array, jax.Array]:
    return per_matrix(_eigh, matrices, calls)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def safe_eigh(matrix: jax.Array, tau: float, calls: str = "batched") -> tuple[jax.Array, jax.Array]:
    """eigh with a degeneracy-safe backward (ssm_gnn_anchors.md §5.1, §5.3); torchref's SafeEigh.

    Backward: Ā = V [F ∘ ½(VᵀV̄ − V̄ᵀV) + diag(λ̄)] Vᵀ with F_ij = 1/(λ_j − λ_i), the formula both
    JAX (_eigh_jvp_rule) and torch (FunctionsManual.cpp linalg_eig_backward) use, except that
    F_ij = 0 where |λ_j − λ_i| <= max(tau, the dtype's rounding split) (mask_width; and on the
    diagonal): the mask of Kasim, arXiv:2011.04366. On a spectrum whose gaps all exceed the width
    it equals the exact gradient; on a (near-)degenerate one it drops the undefined rotation inside
    each degenerate eigenspace instead of returning NaN or 1/ε-sized values.

    Input: symmetric (..., N, N). Like torch.linalg.eigh it reads only the lower triangle
    (symmetrize_input=False); the backward returns a symmetric Ā, so symmetrise the input
    first. Returns ascending eigenvalues (..., N) and eigenvectors (..., N, N). `calls`: see
    per_matrix.
    """
    return _lapack_eigh(matrix, calls)


def mask_width(eigenvalues: jax.Array, tau: float) -> jax.Array:
    """The safe backward's mask width per matrix, (..., N) -> (..., 1, 1): tau, and never less than
    the split rounding may put between two equal eigenvalues in their dtype
    (common.graph.eigenvalue_split · max |λ|: 8.6e-5 for a float32 normalised Laplacian of 19 nodes,
    whose ‖L‖ is up to 2, where tau's default 1e-6 would let rounding noise through as 1/gap)."""
    split = common_graph.eigenvalue_split(eigenvalues.shape[-1], float(jnp.finfo(eigenvalues.dtype).eps))
    largest = jnp.abs(eigenvalues).max(axis=-1)[..., None, None]
    return jnp.maximum(tau, split * largest)


def _safe_eigh_forward(matrix, tau, calls):
    eigenvalues, eigenvectors = _lapack_eigh(matrix, calls)
    return (eigenvalues, eigenvectors), (eigenvalues, eigenvectors)


def _safe_eigh_backward(tau, calls, saved, cotangents):
    eigenvalues, V = saved
    grad_eigenvalues, grad_eigenvectors = cotangents
    Vt = jnp.swapaxes(V, -1, -2)
    projected = Vt @ grad_eigenvectors  # (..., N, N) VᵀV̄
    skew = 0.5 * (projected - jnp.swapaxes(projected, -1, -2))
    gap = eigenvalues[..., None, :] - eigenvalues[..., :, None]  # gap_ij = λ_j − λ_i
    width = mask_width(eigenvalues, tau)  # (..., 1, 1)
    separated = jnp.abs(gap) > width  # False on the diagonal
    inverse_gap = jnp.where(separated, 1.0 / jnp.where(separated, gap, jnp.ones_like(gap)), 0.0)
    eye = jnp.eye(eigenvalues.shape[-1], dtype=eigenvalues.dtype)
    inner = inverse_gap * skew + grad_eigenvalues[..., :, None] * eye  # (..., N, N)
    return (V @ inner @ Vt,)


safe_eigh.defvjp(_safe_eigh_forward, _safe_eigh_backward)


def fix_signs(vectors: jax.Array, sign: str) -> jax.Array:
    """Deterministic eigenvector signs, one per column: (..., N, K) -> (..., N, K).

    `sum` (the original): flip a column whose entries sum to < 0. Unstable where a column sums to
    about 0 (antisymmetric modes), so rounding can flip it between frameworks.
    `max_abs`: make the largest-|·| entry of each column positive. Entries within
    SIGN_TIE_TOLERANCE of the largest |·| count as tied and the first of them decides: on a
    mirror-symmetric graph (the 10-20 layout, left/right) an antisymmetric eigenvector has
    pairs ±x whose |·| differ only by rounding, so a plain argmax picks either side.
    The sign is a constant for autodiff.
    """
    reference = jax.lax.stop_gradient(vectors)
    if sign == "sum":
        key = reference.sum(axis=-2)  # (..., K)
    elif sign == "max_abs":
        magnitude = jnp.abs(reference)
        largest = magnitude.max(axis=-2, keepdims=True)  # (..., 1, K)
        tied = magnitude >= largest - SIGN_TIE_TOLERANCE  # (..., N, K)
        index = jnp.argmax(tied, axis=-2, keepdims=True)  # (..., 1, K) first tied row
        key = jnp.take_along_axis(reference, index, axis=-2).squeeze(-2)  # (..., K)
    else:
        raise ValueError(f"graph.pe_sign must be one of {PE_SIGNS}, got {sign!r}")
    flip = jnp.where(key >= 0, 1.0, -1.0).astype(vectors.dtype)
    return vectors * flip[..., None, :]


def _eigenvectors_at_steps(
    A: jax.Array, k: int, sign: str, gradient: str, tau: float, epsilon: float, guards: bool, calls: str
) -> jax.Array:
    """PE of each graph in A: (B, S, N, N) -> (B, S, N, K)."""
    n_nodes = A.shape[-1]
    eye = jnp.eye(n_nodes, dtype=A.dtype)
    unshifted = _laplacian_unshifted(A, degree_floor=ORIGINAL_DEGREE_FLOOR if guards else None)
    laplacian = unshifted + epsilon * eye  # (B, S, N, N)
    if guards:  # the original's per-graph switch to a larger shift
        # 2-norm condition number σmax/σmin (SVD), as torch.linalg.cond; a singular Laplacian
        # gives inf, never NaN (its diagonal is never all zero).
        ill = jax.lax.stop_gradient(per_matrix(jnp.linalg.cond, laplacian, calls)) > ORIGINAL_COND_LIMIT  # (B, S)
        laplacian = jnp.where(
            ill[..., None, None], unshifted + ORIGINAL_ILL_CONDITIONED_EPSILON * eye, laplacian
        )
    # both eigh read only the lower triangle (jaxbrr: symmetrize_input=False); symmetrise it here,
    # so that the backward's symmetric gradient is the gradient of the matrix decomposed.
    laplacian = 0.5 * (laplacian + jnp.swapaxes(laplacian, -1, -2))
    if gradient == "safe":
        _, vectors = safe_eigh(laplacian, tau, calls)
    else:
        _, vectors = _lapack_eigh(laplacian, calls)  # (B, S, N, N), ascending eigenvalues
    pe = fix_signs(vectors[..., :k], sign)  # (B, S, N, K)
    if guards:
        pe = jnp.nan_to_num(pe, nan=0.0, posinf=1.0, neginf=-1.0)  # the original's gnn_pyg.py
    return pe


def laplacian_pe(
    A: jax.Array,
    k: int,
    sign: str,
    gradient: str,
    tau: float,
    interval: int,
    epsilon: float,
    guards: bool,
    eigh_calls: str = "batched",
) -> jax.Array:
    """Laplacian eigenvector positional encoding: (B, L, N, N) -> (B, L, N, K).

    The K eigenvectors of normalized_laplacian(A, epsilon) with the smallest eigenvalues, the
    first one included (as the original; PyG's AddLaplacianEigenvectorPE drops it). Computed
    only at steps 0, interval, 2·interval, ... (one batched eigh on those S steps) and held for
    the interval − 1 steps after each.

    gradient: `full` differentiates jnp.linalg.eigh (NaN on repeated eigenvalues); `stop`
    computes the PE under stop_gradient; `safe` uses safe_eigh with mask width tau (at least
    the eigenvalues' rounding split in their dtype: mask_width).
    guards (the original): degrees floored at 1e-6; +1e-3·I instead of +epsilon·I on a graph
    whose Laplacian has cond > 1e6; nan_to_num of the PE. The original's cached/random PE
    fallback on NaN is not reproduced (it is state, not math).
    Half-precision A is decomposed in float32 (LAPACK has no bf16/fp16 eigh), as the original.
    eigh_calls: `batched` (one eigh on all B·S graphs) or `looped` (one per graph; per_matrix).
    """
    _, steps, n_nodes, _ = A.shape
    if not 1 <= k <= n_nodes:
        raise ValueError(f"graph.k_eigenvectors must be in [1, {n_nodes}], got {k}")
    if gradient not in PE_GRADIENTS:
        raise ValueError(f"stability.pe_gradient must be one of {PE_GRADIENTS}, got {gradient!r}")
    if interval < 1:
        raise ValueError(f"graph.semi_dynamic_interval must be >= 1, got {interval}")
    compute_dtype = jnp.promote_types(A.dtype, jnp.float32)
    sampled = A[:, ::interval].astype(compute_dtype)  # (B, S, N, N), S = ceil(L / interval)
    if gradient == "stop":
        pe = _eigenvectors_at_steps(
            jax.lax.stop_gradient(sampled), k, sign, gradient, tau, epsilon, guards, eigh_calls
        )
        pe = jax.lax.stop_gradient(pe)
    else:
        pe = _eigenvectors_at_steps(sampled, k, sign, gradient, tau, epsilon, guards, eigh_calls)
    pe = jnp.repeat(pe, interval, axis=1)[:, :steps]  # (B, L, N, K)
    return pe.astype(A.dtype)


# ----------------------------------------------------------------------------------------------
# static graph (graph.use_dynamic_pe: false), on REF19_NEIGHBOURS of common/data/montage.py


def structural_adjacency(montage: str) -> np.ndarray:
    """0/1 symmetric adjacency of the 10-20 neighbour graph, (N, N) float64, zero diagonal."""
    return common_graph.structural_adjacency(montage)


def static_pe(montage: str, k: int, sign: str) -> np.ndarray:
    """Laplacian PE of the static 10-20 graph, (N, K) float64 numpy: a construction-time
    constant computed once in numpy for both frameworks (common/data/montage.py says why)."""
    return common_graph.structural_pe(montage, k, sign, SIGN_TIE_TOLERANCE)
