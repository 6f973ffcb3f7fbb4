"""The graph math in numpy, once: the normalised Laplacian, the eigenvector sign rules and the
static 10-20 positional encoding. jaxbrr/graph.py and torchref/graph.py are the differentiable
twins of the first two (same definitions, the original's Laplacian: graph.normalized_laplacian); the static
PE is computed here, once, for both frameworks; the localiser's eigh report uses this Laplacian.
"""

from __future__ import annotations

import numpy as np

from common.constants import PE_SIGNS, SIGN_TIE_TOLERANCE
from common.data.montage import REF19, REF19_NEIGHBOURS


def normalized_laplacian(A: np.ndarray, epsilon: float) -> np.ndarray:
    """L = I − D^-1/2 A D^-1/2 + epsilon·I over the last two axes, float64; the twins' (jaxbrr and
    torchref graph.normalized_laplacian) in numpy.

    The original's (reference/original_spec.md §2; brain-go-brr's gnn_pyg.py): A as adjacency gives
    it, self-loops included, degree = row sums. An isolated node's identity fallback is its only
    entry, so its degree is 1 and its L_ii 0: it joins the null space, and its indicator vector is
    among the first eigenvectors. PyG's get_laplacian(normalization='sym') removes self-loops
    first, giving such a node L_ii = 1; graphs without a self-loop are the same under both. A node
    of degree 0 (an A without the fallback) gets D^-1/2 = 0, so L_ii = 1. For symmetric A >= 0
    the eigenvalues lie in [epsilon, 2 + epsilon]."""
    A = np.asarray(A, np.float64)
    n = A.shape[-1]
    degree = A.sum(-1)
    inverse = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    return np.eye(n) - inverse[..., :, None] * A * inverse[..., None, :] + epsilon * np.eye(n)


def eigensolver_backward_error(n: int) -> int:
    """p(n) of a backward-stable symmetric eigensolver's error ‖E‖₂ <= p(n)·u·‖L‖₂ on an n x n
    matrix. Golub & Van Loan (Matrix Computations, 4th ed., §8.3) leave p(n) "a modest function of
    n"; its a priori value comes from the tridiagonal reduction, n − 2 Householder reflections
    applied from both sides, each a backward error of γ̃ ≈ c·n·u (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., Lemma 19.3 and §19.3): n² for c = 1/2, the rounding of the
    input and of forming L (a few operations per entry) and the tridiagonal QR iteration (O(n)u)
    well inside it."""
    return n * n


def eigenvalue_split(n: int, machine_epsilon: float) -> float:
    """How far apart rounding alone may return two equal eigenvalues of an n x n symmetric matrix,
    per unit of ‖L‖₂: each computed eigenvalue lies within ‖E‖₂ <= p(n)·u·‖L‖₂ of its exact one
    (Weyl's inequality on the backward error, eigensolver_backward_error), so a tie may come back
    split by 2·p(n)·u = p(n)·eps (u = eps / 2). 4.3e-5 in float32 at n = 19, 8.0e-14 in float64.

    The safe eigh backward (jaxbrr.graph.safe_eigh, torchref.graph.SafeEigh) masks every gap up to
    max(stability.eigh_tau, this · max |λ|): a computed gap below it cannot be told from a tie, and
    its 1/gap is rounding noise (ssm_gnn_anchors.md §5.3 measured masks of 1e-6 in float64 and
    1e-4 in float32)."""
    return eigensolver_backward_error(n) * machine_epsilon


def fix_signs(vectors: np.ndarray, sign: str, tie_tolerance: float = SIGN_TIE_TOLERANCE) -> np.ndarray:
    """Deterministic eigenvector signs per column of (..., N, K) (jaxbrr.graph.fix_signs' rules):
    `sum` flips a column whose entries sum below 0; `max_abs` makes the largest-|·| entry
    positive, entries within tie_tolerance of it counting as tied and the first one deciding."""
    if sign == "sum":
        key = vectors.sum(axis=-2)
    elif sign == "max_abs":
        magnitude = np.abs(vectors)
        first_tied = np.argmax(magnitude >= magnitude.max(axis=-2, keepdims=True) - tie_tolerance, axis=-2)
        key = np.take_along_axis(vectors, first_tied[..., None, :], axis=-2)[..., 0, :]
    else:
        raise ValueError(f"graph.pe_sign must be one of {PE_SIGNS}, got {sign!r}")
    return vectors * np.where(key >= 0, 1.0, -1.0)[..., None, :]


def structural_adjacency(montage: str) -> np.ndarray:
    """0/1 symmetric adjacency of the 10-20 neighbour graph, (N, N) float64 numpy, zero diagonal."""
    if montage != "ref19":
        raise ValueError(
            f"static PE is defined for ref19 only, got montage {montage!r}; "
            "use graph.use_dynamic_pe: true"
        )
    index = {name: i for i, name in enumerate(REF19)}
    A = np.zeros((len(REF19), len(REF19)), dtype=np.float64)
    for a, b in REF19_NEIGHBOURS:
        A[index[a], index[b]] = A[index[b], index[a]] = 1.0
    return A


def structural_pe(montage: str, k: int, sign: str, tie_tolerance: float = SIGN_TIE_TOLERANCE) -> np.ndarray:
    """Laplacian eigenvector PE of the static 10-20 graph, (N, K) float64 numpy.

    Computed once, here, for both frameworks: the graph is left/right mirror-symmetric, so some
    eigenvectors sum to ~1e-15 and the original's `sum` sign rule would otherwise let each
    framework's rounding pick a different sign (7 of 16 columns did). L = I − D^-½ A D^-½ (no
    isolated nodes here); sign rules as graph.fix_signs (`sum`, or `max_abs` with ties within
    tie_tolerance resolved by the first row).
    """
    _, vectors = np.linalg.eigh(normalized_laplacian(structural_adjacency(montage), 0.0))
    return fix_signs(vectors[:, :k], sign, tie_tolerance)  # (N, K)
