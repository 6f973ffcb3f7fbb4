"""Graph construction for the V3 edge stream and GNN: pure functions, no parameters.

    electrodes --edge_features--> edge weights --(edge BiMamba)--> adjacency --> Laplacian PE

Glossary: B batch, L steps (time steps of the encoder, T/16), N nodes (electrodes), E = N(N-1)/2
edges (pairs i < j, row-major), D feature width, K eigenvectors kept (the `k` argument), S the
steps where the PE is computed (0, interval, 2·interval, ...).

`jaxbrr/graph.py` has the same functions, in the same order, with the same arguments. `guards`
is a bool here: True reproduces the original's clamps (`stability.guards: original`).
"""

from __future__ import annotations

import torch
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

# ----------------------------------------------------------------------------------------------
# edges


def edge_pairs(n_nodes: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The E pairs i < j in row-major order: (0,1), (0,2), ..., (N-2,N-1); 171 for 19 nodes.
    Made on `device`, the tensors they index: a CPU index into a CUDA tensor is a blocking host
    copy, which would hold the host back at every use."""
    pairs = torch.triu_indices(n_nodes, n_nodes, offset=1, device=device)  # (2, E)
    return pairs[0], pairs[1]


def safe_rsqrt(x: torch.Tensor) -> torch.Tensor:
    """x^-1/2 where x > 0, else 0, with a finite gradient everywhere.

    The inner where keeps rsqrt away from 0 so its derivative is never inf; `0 * inf` would
    otherwise turn the masked branch into NaN (ssm_gnn_anchors.md §6.5).
    """
    positive = x > 0
    return torch.where(positive, torch.rsqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def edge_features(electrodes: torch.Tensor, kind: str, guards: bool) -> torch.Tensor:
    """Similarity of every electrode pair at every step: (B, N, L, D) -> (B, E, L).

    cosine      = <a, b> / (max(‖a‖, eps) · max(‖b‖, eps))
    correlation = <a', b'> / (sqrt(‖a'‖² + eps') · sqrt(‖b'‖² + eps')), a' = a − mean(a) (over D),
                  the original's formula (common/constants.py CORRELATION_EPS)

    Cosine's norms enter as rsqrt(max(‖a‖², eps²)), never as ‖a‖: the gradient of a norm at 0 is 0/0
    in JAX (NaN even behind max(‖a‖, eps)), whereas ‖a‖² has gradient 2a = 0 there and max()
    sends no gradient to its smaller argument. An all-zero electrode (flat channel, padding)
    thus gets similarity exactly 0 and a finite gradient b / (eps·‖b‖) in both frameworks, as
    torch's own cosine_similarity does (parity_nan_anchors.md §4.4, ssm_gnn_anchors.md §6.4).
    Correlation's as rsqrt(‖a'‖² + eps'), finite with a finite gradient everywhere: a constant
    electrode gets similarity 0 and gradient b' / (sqrt(eps')·‖b'‖) before the centring's.
    """
    if kind == "correlation":
        electrodes = electrodes - electrodes.mean(dim=-1, keepdim=True)
    elif kind != "cosine":
        raise ValueError(f"graph.edge_features must be 'cosine' or 'correlation', got {kind!r}")
    n_nodes = electrodes.shape[1]
    rows, cols = edge_pairs(n_nodes, electrodes.device)
    dots = torch.einsum("bnld,bmld->blnm", electrodes, electrodes)  # (B, L, N, N)
    squared_norms = (electrodes * electrodes).sum(dim=-1)  # (B, N, L)
    if kind == "correlation":
        inverse_norms = torch.rsqrt(squared_norms + CORRELATION_EPS)  # (B, N, L)
    else:
        inverse_norms = torch.rsqrt(torch.clamp_min(squared_norms, COSINE_EPS**2))
    inverse_norms = rearrange(inverse_norms, "b n l -> b l n")  # (B, L, N)
    similarity = dots[..., rows, cols] * inverse_norms[..., rows]  # (B, L, E)
    similarity = similarity * inverse_norms[..., cols]
    similarity = rearrange(similarity, "b l e -> b e l")  # (B, E, L)
    if guards:
        similarity = torch.clamp(similarity, -ORIGINAL_EDGE_CLAMP, ORIGINAL_EDGE_CLAMP)
    return similarity


# ----------------------------------------------------------------------------------------------
# adjacency and Laplacian


def adjacency(
    edge_weights: torch.Tensor, n_nodes: int, top_k: int, threshold: float
) -> torch.Tensor:
    """Sparse symmetric adjacency of every (sample, step) graph: (B, E, L) -> (B, L, N, N).

    As the original (original_spec.md §2): fill A[i, j] = A[j, i] = w_ij (zero diagonal); keep
    the top_k entries of each row; zero the entries <= threshold; symmetrise (A + Aᵀ)/2; put 1
    on the diagonal of each row whose sum is < threshold (a node without an edge keeps itself).
    A NaN weight is not <= threshold, so it stays (top-k ranks NaN first in both frameworks):
    a NaN born in the edge stream reaches the graph, where `dense > threshold` had dropped it
    in silence and left an empty graph (the localiser then blamed the PE's eigenvalues).

    Ties: among equal entries of a row the lowest indices are kept, the rule jax.lax.top_k
    documents ("the lower-index element appears first"), by a stable descending sort. torch.topk
    has no rule (on CPU, among 0.5 at columns 1, 2, 3, 5 it keeps 3 and 5), and exact ties above
    the threshold are real: a flat window (a disconnected or zeroed montage) gives every electrode
    the same features, so every similarity is equal, and the two twins kept different edges
    (logits 25 % apart). The original used torch.topk: its choice among ties was arbitrary.
    """
    if edge_weights.shape[1] != n_edges(n_nodes):
        raise ValueError(
            f"edge_weights has {edge_weights.shape[1]} edges, {n_nodes} nodes need {n_edges(n_nodes)}"
        )
    if not 1 <= top_k <= n_nodes:
        raise ValueError(f"graph.top_k must be in [1, {n_nodes}], got {top_k}")
    batch, _, steps = edge_weights.shape
    rows, cols = edge_pairs(n_nodes, edge_weights.device)
    weights = rearrange(edge_weights, "b e l -> b l e")  # (B, L, E)
    dense = weights.new_zeros(batch, steps, n_nodes, n_nodes)  # (B, L, N, N)
    dense[..., rows, cols] = weights
    dense[..., cols, rows] = weights
    ranked = torch.where(torch.isnan(dense), torch.inf, dense)  # NaN first, as in jaxbrr (any sign)
    top_index = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :top_k]  # (B, L, N, top_k)
    keep = torch.zeros_like(dense, dtype=torch.bool).scatter_(-1, top_index, True)
    dense = torch.where(keep & ~(dense <= threshold), dense, 0.0)  # NaN is not <= threshold: kept
    dense = 0.5 * (dense + dense.transpose(-1, -2))
    isolated = dense.sum(dim=-1) < threshold  # (B, L, N)
    return dense + torch.diag_embed(isolated.to(dense.dtype))


def _laplacian_unshifted(A: torch.Tensor, degree_floor: float | None) -> torch.Tensor:
    """I − D^-1/2 A D^-1/2 without the epsilon shift (see normalized_laplacian)."""
    n_nodes = A.shape[-1]
    eye = torch.eye(n_nodes, dtype=A.dtype, device=A.device)
    degree = A.sum(dim=-1)  # (..., N) row sums
    if degree_floor is None:
        inverse_sqrt = safe_rsqrt(degree)
    else:  # the original's guard: a node of degree 0 (an A without adjacency's fallback) gets 1/sqrt(1e-6)
        inverse_sqrt = torch.rsqrt(torch.clamp_min(degree, degree_floor))
    return eye - inverse_sqrt[..., :, None] * A * inverse_sqrt[..., None, :]


def normalized_laplacian(A: torch.Tensor, epsilon: float) -> torch.Tensor:
    """L = I − D^-1/2 A D^-1/2 + epsilon·I, (..., N, N) -> (..., N, N).

    The original's, self-loops kept (common/graph.py normalized_laplacian says what that means
    for an isolated node, and how PyG's differs). A node of degree 0 gets D^-1/2 = 0 through the
    gradient-safe where (safe_rsqrt), not PyG's pow(-0.5) + masked_fill, whose gradient is NaN.
    """
    n_nodes = A.shape[-1]
    eye = torch.eye(n_nodes, dtype=A.dtype, device=A.device)
    return _laplacian_unshifted(A, degree_floor=None) + epsilon * eye


# ----------------------------------------------------------------------------------------------
# eigenvectors


def mask_width(eigenvalues: torch.Tensor, tau: float) -> torch.Tensor:
    """The safe backward's mask width per matrix, (..., N) -> (..., 1, 1): tau, and never less than
    the split rounding may put between two equal eigenvalues in their dtype
    (common.graph.eigenvalue_split · max |λ|: 8.6e-5 for a float32 normalised Laplacian of 19 nodes,
    whose ‖L‖ is up to 2, where tau's default 1e-6 would let rounding noise through as 1/gap)."""
    split = common_graph.eigenvalue_split(eigenvalues.shape[-1], torch.finfo(eigenvalues.dtype).eps)
    largest = eigenvalues.abs().amax(dim=-1)[..., None, None]
    return torch.clamp(split * largest, min=tau)  # max(tau, ·)


class SafeEigh(torch.autograd.Function):
    """torch.linalg.eigh with a degeneracy-safe backward (ssm_gnn_anchors.md §5.1, §5.3).

    Backward: Ā = V [F ∘ ½(VᵀV̄ − V̄ᵀV) + diag(λ̄)] Vᵀ with F_ij = 1/(λ_j − λ_i), the formula both
    torch (FunctionsManual.cpp linalg_eig_backward) and JAX (_eigh_jvp_rule) use, except that
    F_ij = 0 where |λ_j − λ_i| <= max(tau, the dtype's rounding split) (mask_width; and on the
    diagonal): the mask of Kasim, arXiv:2011.04366. On a spectrum whose gaps all exceed the width
    it equals the exact gradient; on a (near-)degenerate one it drops the undefined rotation inside
    each degenerate eigenspace instead of returning NaN or 1/ε-sized values.

    Input: symmetric (..., N, N) (eigh reads only the lower triangle; the backward returns a
    symmetric Ā, so symmetrise the input first). Returns ascending eigenvalues and eigenvectors.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, tau: float):
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix)  # (..., N), (..., N, N)
        ctx.save_for_backward(eigenvalues, eigenvectors)
        ctx.tau = tau
        return eigenvalues, eigenvectors

    @staticmethod
    def backward(ctx, grad_eigenvalues, grad_eigenvectors):
        eigenvalues, V = ctx.saved_tensors
        projected = V.transpose(-1, -2) @ grad_eigenvectors  # (..., N, N) VᵀV̄
        skew = 0.5 * (projected - projected.transpose(-1, -2))
        gap = eigenvalues[..., None, :] - eigenvalues[..., :, None]  # gap_ij = λ_j − λ_i
        separated = gap.abs() > mask_width(eigenvalues, ctx.tau)  # False on the diagonal
        inverse_gap = torch.where(
            separated, 1.0 / torch.where(separated, gap, torch.ones_like(gap)), 0.0
        )
        inner = inverse_gap * skew + torch.diag_embed(grad_eigenvalues)
        return V @ inner @ V.transpose(-1, -2), None


def fix_signs(vectors: torch.Tensor, sign: str) -> torch.Tensor:
    """Deterministic eigenvector signs, one per column: (..., N, K) -> (..., N, K).

    `sum` (the original): flip a column whose entries sum to < 0. Unstable where a column sums to
    about 0 (antisymmetric modes), so rounding can flip it between frameworks.
    `max_abs`: make the largest-|·| entry of each column positive. Entries within
    SIGN_TIE_TOLERANCE of the largest |·| count as tied and the first of them decides: on a
    mirror-symmetric graph (the 10-20 layout, left/right) an antisymmetric eigenvector has
    pairs ±x whose |·| differ only by rounding, so a plain argmax picks either side.
    The sign is a constant for autograd.
    """
    reference = vectors.detach()
    if sign == "sum":
        key = reference.sum(dim=-2)  # (..., K)
    elif sign == "max_abs":
        magnitude = reference.abs()
        largest = magnitude.amax(dim=-2, keepdim=True)  # (..., 1, K)
        tied = (magnitude >= largest - SIGN_TIE_TOLERANCE).to(torch.int8)  # (..., N, K)
        index = tied.argmax(dim=-2, keepdim=True)  # (..., 1, K) first tied row (argmax: first max)
        key = torch.gather(reference, -2, index).squeeze(-2)  # (..., K)
    else:
        raise ValueError(f"graph.pe_sign must be one of {PE_SIGNS}, got {sign!r}")
    flip = torch.where(key >= 0, 1.0, -1.0).to(vectors.dtype)
    return vectors * flip[..., None, :]


def _eigenvectors_at_steps(
    A: torch.Tensor, k: int, sign: str, gradient: str, tau: float, epsilon: float, guards: bool
) -> torch.Tensor:
    """PE of each graph in A: (B, S, N, N) -> (B, S, N, K)."""
    n_nodes = A.shape[-1]
    eye = torch.eye(n_nodes, dtype=A.dtype, device=A.device)
    unshifted = _laplacian_unshifted(A, degree_floor=ORIGINAL_DEGREE_FLOOR if guards else None)
    laplacian = unshifted + epsilon * eye  # (B, S, N, N)
    # which graphs are finite: neither shift nor symmetrising below changes it (used twice)
    finite = torch.isfinite(laplacian).all(dim=-1).all(dim=-1)[..., None, None]  # (B, S, 1, 1)
    if guards:  # the original's per-graph switch to a larger shift
        with torch.no_grad():
            # LAPACK's SVD raises on a non-finite matrix where JAX's cond gives NaN (not > the limit):
            # such a graph is not switched, in both twins, and its NaN goes on (below)
            ill = torch.linalg.cond(torch.where(finite, laplacian, eye)) > ORIGINAL_COND_LIMIT  # (B, S)
        laplacian = torch.where(
            ill[..., None, None], unshifted + ORIGINAL_ILL_CONDITIONED_EPSILON * eye, laplacian
        )
    # both eigh read only the lower triangle (jaxbrr: symmetrize_input=False); symmetrise it here,
    # so that the backward's symmetric gradient is the gradient of the matrix decomposed.
    laplacian = 0.5 * (laplacian + laplacian.transpose(-1, -2))
    # A non-finite Laplacian (NaN edge weights reach the adjacency) has NaN eigenvectors, as JAX's
    # eigh returns them; LAPACK's fails to converge on it and torch raises. So such a graph is
    # decomposed as the identity and its eigenvectors get the NaN of L - L (0 where L is finite):
    # the NaN reaches the PE in both twins, from the input's own NaN (no NaN constant, which the
    # localiser's op finder would take for the birth). No host sync.
    poison = (laplacian - laplacian).sum(dim=(-2, -1), keepdim=True)  # (B, S, 1, 1): 0 or NaN
    laplacian = torch.where(finite, laplacian, eye)
    if gradient == "safe":
        _, vectors = SafeEigh.apply(laplacian, tau)
    else:
        _, vectors = torch.linalg.eigh(laplacian)  # (B, S, N, N), ascending eigenvalues
    vectors = vectors + poison
    pe = fix_signs(vectors[..., :k], sign)  # (B, S, N, K)
    if guards:
        pe = torch.nan_to_num(pe, nan=0.0, posinf=1.0, neginf=-1.0)  # the original's gnn_pyg.py
    return pe


def laplacian_pe(
    A: torch.Tensor,
    k: int,
    sign: str,
    gradient: str,
    tau: float,
    interval: int,
    epsilon: float,
    guards: bool,
) -> torch.Tensor:
    """Laplacian eigenvector positional encoding: (B, L, N, N) -> (B, L, N, K).

    The K eigenvectors of normalized_laplacian(A, epsilon) with the smallest eigenvalues, the
    first one included (as the original; PyG's AddLaplacianEigenvectorPE drops it). Computed
    only at steps 0, interval, 2·interval, ... and held for the interval − 1 steps after each.

    gradient: `full` backpropagates through torch.linalg.eigh (NaN on repeated eigenvalues);
    `stop` computes the PE without gradient; `safe` uses SafeEigh with mask width tau (at least
    the eigenvalues' rounding split in their dtype: mask_width).
    guards (the original): degrees floored at 1e-6; +1e-3·I instead of +epsilon·I on a graph
    whose Laplacian has cond > 1e6; nan_to_num of the PE. The original's cached/random PE
    fallback on NaN is not reproduced (it is state, not math).
    Half-precision A is decomposed in float32 (LAPACK has no bf16/fp16 eigh), as the original.
    """
    _, steps, n_nodes, _ = A.shape
    if not 1 <= k <= n_nodes:
        raise ValueError(f"graph.k_eigenvectors must be in [1, {n_nodes}], got {k}")
    if gradient not in PE_GRADIENTS:
        raise ValueError(f"stability.pe_gradient must be one of {PE_GRADIENTS}, got {gradient!r}")
    if interval < 1:
        raise ValueError(f"graph.semi_dynamic_interval must be >= 1, got {interval}")
    compute_dtype = torch.promote_types(A.dtype, torch.float32)
    sampled = A[:, ::interval].to(compute_dtype)  # (B, S, N, N), S = ceil(L / interval)
    if gradient == "stop":
        with torch.no_grad():
            pe = _eigenvectors_at_steps(sampled.detach(), k, sign, gradient, tau, epsilon, guards)
    else:
        pe = _eigenvectors_at_steps(sampled, k, sign, gradient, tau, epsilon, guards)
    pe = pe.repeat_interleave(interval, dim=1)[:, :steps]  # (B, L, N, K)
    return pe.to(A.dtype)


# ----------------------------------------------------------------------------------------------
# static graph (graph.use_dynamic_pe: false), on REF19_NEIGHBOURS of common/data/montage.py
# (shared with jaxbrr/graph.py, which must not import torch)


def structural_adjacency(montage: str) -> torch.Tensor:
    """0/1 symmetric adjacency of the 10-20 neighbour graph, (N, N) float64, zero diagonal."""
    return torch.from_numpy(common_graph.structural_adjacency(montage))


def static_pe(montage: str, k: int, sign: str) -> torch.Tensor:
    """Laplacian PE of the static 10-20 graph, (N, K) float64: computed once in numpy for both
    frameworks (common/data/montage.py says why)."""
    return torch.from_numpy(common_graph.structural_pe(montage, k, sign, SIGN_TIE_TOLERANCE))
