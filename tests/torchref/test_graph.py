"""torchref.graph: exact small cases, PyG oracles (get_laplacian, AddLaplacianEigenvectorPE),
and the eigh gradient modes on degenerate and well-separated spectra."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE
from torch_geometric.utils import dense_to_sparse, get_laplacian, to_dense_adj

from common import graph as common_graph
from common.data.montage import REF19, REF19_NEIGHBOURS
from parity.compare import compare_arrays
from torchref import graph
from torchref.graph import (
    SafeEigh,
    adjacency,
    edge_features,
    edge_pairs,
    fix_signs,
    laplacian_pe,
    normalized_laplacian,
    static_pe,
    structural_adjacency,
)

F64 = torch.float64


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _random_symmetric_weights(n_graphs, n_nodes, seed, density=1.0):
    """Symmetric W >= 0 with zero diagonal, (G, N, N) float64."""
    g = _generator(seed)
    W = torch.rand(n_graphs, n_nodes, n_nodes, generator=g, dtype=F64) + 0.1
    W = W * (torch.rand(n_graphs, n_nodes, n_nodes, generator=g, dtype=F64) < density)
    W = torch.triu(W, diagonal=1)
    return W + W.transpose(-1, -2)


def _pe(A, k, sign="max_abs", gradient="full", tau=1e-9, interval=1, epsilon=1e-4, guards=False):
    return laplacian_pe(A, k, sign, gradient, tau, interval, epsilon, guards)


# ----------------------------------------------------------------------------------------------
# edges


def test_edge_pairs_row_major_upper_triangle():
    rows, cols = edge_pairs(19)
    expected = [(i, j) for i in range(19) for j in range(i + 1, 19)]
    assert len(rows) == 171
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cosine_equals_torch_cosine_similarity(dtype):
    x = torch.randn(2, 5, 3, 8, generator=_generator(0), dtype=F64).to(dtype)  # (B, N, L, D)
    rows, cols = edge_pairs(5)
    expected = F.cosine_similarity(x[:, rows], x[:, cols], dim=-1)  # (B, E, L)
    got = edge_features(x, "cosine", guards=False)
    assert got.shape == (2, 10, 3)
    row = compare_arrays("cosine", got.numpy(), expected.numpy(), "layer", dtype)  # parity/tolerances.py
    assert row.passed, row.reason


def test_cosine_gradient_equals_torch_even_at_a_zero_electrode():
    x = torch.randn(2, 5, 3, 8, generator=_generator(20), dtype=F64)
    x[0, 1] = 0.0
    weights = torch.randn(2, 10, 3, generator=_generator(21), dtype=F64)
    rows, cols = edge_pairs(5)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    (edge_features(ours, "cosine", guards=False) * weights).sum().backward()
    (F.cosine_similarity(theirs[:, rows], theirs[:, cols], dim=-1) * weights).sum().backward()
    # b / (eps·‖b‖) at the zero electrode: finite, ~1e8, as torch's per-norm clamp
    assert torch.isfinite(ours.grad).all() and ours.grad[0, 1].abs().max() > 1e6
    assert ((ours.grad - theirs.grad).abs() <= 1e-12 * theirs.grad.abs().max()).all()


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_correlation_is_the_originals_formula(scale):
    """brain-go-brr v2's edge_scalar_series: <a', b'> / (sqrt(‖a'‖² + 1e-8) · sqrt(‖b'‖² + 1e-8)),
    a' = a − mean(a), one pair at a time in float64. At unit scale that is Pearson's r within the
    eps's share of the norms; at features of 1e-4 the eps is ~1/15 of ‖a'‖² and shrinks it."""
    x = (torch.randn(1, 4, 2, 16, generator=_generator(1), dtype=F64) + 3.0) * scale  # offset: centring matters
    got = edge_features(x, "correlation", guards=False)
    for e, (i, j) in enumerate(zip(*edge_pairs(4), strict=True)):
        for t in range(2):
            a, b = x[0, i, t] - x[0, i, t].mean(), x[0, j, t] - x[0, j, t].mean()
            original = (a * b).sum() / (torch.sqrt((a * a).sum() + 1e-8) * torch.sqrt((b * b).sum() + 1e-8))
            assert abs(got[0, e, t] - original) <= 1e-14
            pearson = torch.corrcoef(torch.stack([x[0, i, t], x[0, j, t]]))[0, 1]
            eps_share = 1e-8 / (a * a).sum() + 1e-8 / (b * b).sum()  # relative, to first order, twice
            if scale == 1.0:
                assert abs(got[0, e, t] - pearson) <= abs(pearson) * eps_share + 1e-14
            else:
                assert abs(got[0, e, t]) < abs(pearson) * (1 - eps_share / 4)


@pytest.mark.parametrize("kind", ["cosine", "correlation"])
def test_flat_electrode_gives_zero_similarity_and_finite_gradient(kind):
    x = torch.randn(2, 5, 3, 8, generator=_generator(2), dtype=torch.float32)
    x[:, 2] = 0.0 if kind == "cosine" else 1.5  # all-zero / constant electrode
    x[1, 3, 1] = 0.0  # and one zero vector at a single step
    x.requires_grad_()
    similarity = edge_features(x, kind, guards=False)
    rows, cols = edge_pairs(5)
    touches = (rows == 2) | (cols == 2)
    assert torch.equal(similarity[:, touches], torch.zeros_like(similarity[:, touches]))
    (similarity * torch.randn(similarity.shape, generator=_generator(3))).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_edge_guards_clamp_to_099():
    a = torch.randn(1, 1, 4, 8, generator=_generator(4), dtype=F64)
    x = torch.cat([a, 2 * a, -a], dim=1)  # pairs (0,1): +1, (0,2): −1, (1,2): −1
    raw = edge_features(x, "cosine", guards=False)
    guarded = edge_features(x, "cosine", guards=True)
    assert (raw[0, 0] - 1).abs().max() <= 1e-14 and (raw[0, 1:] + 1).abs().max() <= 1e-14
    assert torch.equal(guarded[0, 0], torch.full((4,), 0.99, dtype=F64))
    assert torch.equal(guarded[0, 1:], torch.full((2, 4), -0.99, dtype=F64))


# ----------------------------------------------------------------------------------------------
# adjacency


def _four_node_weights(values):
    """Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3) -> (B=1, E=6, L=1)."""
    return torch.tensor(values, dtype=F64)[None, :, None]


def test_adjacency_top1_exact():
    # full matrix rows: 0: [0 .9 .1 .5]  1: [.9 0 .3 0]  2: [.1 .3 0 .2]  3: [.5 0 .2 0]
    # top-1 keeps 0→1, 1→0, 2→1, 3→0; then (A + Aᵀ)/2 halves the one-sided ones
    got = adjacency(_four_node_weights([0.9, 0.1, 0.5, 0.3, 0.0, 0.2]), 4, top_k=1, threshold=1e-4)
    expected = torch.tensor(
        [[0, 0.9, 0, 0.25], [0.9, 0, 0.15, 0], [0, 0.15, 0, 0], [0.25, 0, 0, 0]], dtype=F64
    )
    assert got.shape == (1, 1, 4, 4)
    assert torch.allclose(got[0, 0], expected, rtol=0, atol=1e-15)


def test_adjacency_top2_exact():
    got = adjacency(_four_node_weights([0.9, 0.1, 0.5, 0.3, 0.0, 0.2]), 4, top_k=2, threshold=1e-4)
    expected = torch.tensor(
        [[0, 0.9, 0, 0.5], [0.9, 0, 0.3, 0], [0, 0.3, 0, 0.2], [0.5, 0, 0.2, 0]], dtype=F64
    )
    assert torch.equal(got[0, 0], expected)


def test_adjacency_threshold_and_identity_row():
    # node 3's best weight equals the threshold (1e-4): dropped (<=), so node 3 is isolated
    got = adjacency(
        _four_node_weights([0.9, 0.1, 5e-5, 0.3, 0.0, 1e-4]), 4, top_k=1, threshold=1e-4
    )
    expected = torch.tensor(
        [[0, 0.9, 0, 0], [0.9, 0, 0.15, 0], [0, 0.15, 0, 0], [0, 0, 0, 1.0]], dtype=F64
    )
    assert torch.allclose(got[0, 0], expected, rtol=0, atol=1e-15)


def test_adjacency_random_is_symmetric_and_sparse():
    weights = torch.rand(2, 171, 7, generator=_generator(5), dtype=F64)
    weights[0, :, 3] = 0.0  # a step with no edge at all: identity
    A = adjacency(weights, 19, top_k=3, threshold=1e-4)  # (B, L, N, N)
    assert A.shape == (2, 7, 19, 19)
    assert torch.equal(A, A.transpose(-1, -2))
    assert torch.equal(A[0, 3], torch.eye(19, dtype=F64))
    off_diagonal = A * (1 - torch.eye(19, dtype=F64))
    # each row keeps at most its own top 3 plus the rows that chose it
    degree = (off_diagonal > 0).sum(-1)  # (B, L, N)
    assert (degree[0, 3] == 0).all() and (degree[:, [0, 1, 2, 4, 5, 6]] >= 1).all()
    assert (degree[:, [0, 1, 2, 4, 5, 6]].sum(-1) <= 2 * 19 * 3).all()


# ----------------------------------------------------------------------------------------------
# Laplacian


def test_normalized_laplacian_of_a_graph_without_loops_equals_pyg_get_laplacian():
    """PyG removes self-loops first, the original (and ours) keeps them: on a graph without any
    the two definitions are one, and a node of degree 0 has L_ii = 1 under both."""
    W = _random_symmetric_weights(3, 9, seed=6, density=0.5)
    W[:, 5, :] = 0.0  # a node without any edge, and without adjacency's fallback loop
    W[:, :, 5] = 0.0
    assert (torch.diagonal(W, dim1=-2, dim2=-1) == 0).all()
    epsilon = 1e-4
    got = normalized_laplacian(W, epsilon)  # (G, N, N)
    for g in range(3):
        edge_index, edge_weight = dense_to_sparse(W[g])
        index, value = get_laplacian(edge_index, edge_weight, normalization="sym", num_nodes=9)
        expected = to_dense_adj(index, edge_attr=value, max_num_nodes=9)[0]
        expected = expected + epsilon * torch.eye(9, dtype=F64)
        assert (got[g] - expected).abs().max() <= 1e-15
    assert got[0, 5, 5] == 1 + epsilon
    eigenvalues = torch.linalg.eigvalsh(got)
    assert eigenvalues.min() >= epsilon - 1e-12 and eigenvalues.max() <= 2 + epsilon + 1e-12


def test_an_isolated_nodes_fallback_loop_puts_it_in_the_null_space_as_in_the_original():
    """The original's Laplacian keeps self-loops (original_spec.md §2: adjacency puts 1 on the
    diagonal of an isolated node's row, the Laplacian is taken of that A): node 2's degree is its
    loop's 1, so L_22 = 1 − 1 = 0 and e_2 is a null vector beside the edge's (PyG's get_laplacian,
    which drops the loop, would give L_22 = 1)."""
    weights = torch.zeros(1, 3, 1, dtype=F64)
    weights[0, 0, 0] = 0.5  # edge (0, 1); edges (0, 2), (1, 2) are 0
    A = adjacency(weights, 3, top_k=1, threshold=1e-4)[0, 0]
    assert torch.equal(A, torch.tensor([[0, 0.5, 0], [0.5, 0, 0], [0, 0, 1.0]], dtype=F64))
    epsilon = 1e-4
    got = normalized_laplacian(A, epsilon)
    # degrees (0.5, 0.5, 1): L = I − D^-1/2 A D^-1/2 = [[1, −1, 0], [−1, 1, 0], [0, 0, 0]], + ε·I
    expected = torch.tensor([[1, -1, 0], [-1, 1, 0], [0, 0, 0]], dtype=F64) + epsilon * torch.eye(3, dtype=F64)
    assert (got - expected).abs().max() <= 1e-15
    torch.testing.assert_close(torch.linalg.eigvalsh(got), torch.tensor([0, 0, 2], dtype=F64) + epsilon,
                               rtol=0, atol=1e-15)


def test_isolated_node_laplacian_gradient_is_finite():
    W = _random_symmetric_weights(1, 5, seed=7)
    W[:, 0, :] = 0.0
    W[:, :, 0] = 0.0
    W.requires_grad_()
    normalized_laplacian(W, 1e-4).sum().backward()
    assert torch.isfinite(W.grad).all()


# ----------------------------------------------------------------------------------------------
# Laplacian PE: steps, signs, PyG oracle


@pytest.mark.parametrize("gradient", ["full", "stop", "safe"])
def test_pe_computed_only_every_interval_steps(monkeypatch, gradient):
    decomposed = []
    eigh = torch.linalg.eigh

    def counting_eigh(matrix, *args, **kwargs):
        decomposed.append(matrix.shape[:-2].numel())
        return eigh(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counting_eigh)
    A = _random_symmetric_weights(2 * 12, 6, seed=8).reshape(2, 12, 6, 6)  # (B, L, N, N)
    pe = _pe(A, k=4, gradient=gradient, interval=5)
    assert sum(decomposed) == 2 * 3  # steps 0, 5, 10 of each sample
    assert pe.shape == (2, 12, 6, 4)
    for start, stop in [(0, 5), (5, 10), (10, 12)]:
        held = pe[:, start:stop]
        assert torch.equal(held, held[:, :1].expand_as(held))
        # the same numbers as the step alone, within float64's "layer" row, not bit for bit: MKL's
        # eigh may round a matrix by its place in the batch (tests/jaxbrr/test_graph.py's twin)
        single = _pe(A[:, start : start + 1], k=4, interval=1)[:, 0]
        row = compare_arrays(f"step {start}", pe[:, start].numpy(), single.numpy(), "layer", "float64")
        assert row.passed, row
    assert not torch.allclose(pe[:, 0], pe[:, 5])


def test_pe_sign_rules():
    A = _random_symmetric_weights(4, 8, seed=9, density=0.6)[None]  # (1, 4, N, N)
    by_sum = _pe(A, k=8, sign="sum")
    assert (by_sum.sum(dim=-2) >= 0).all()
    by_max = _pe(A, k=8, sign="max_abs")
    index = by_max.abs().argmax(dim=-2, keepdim=True)
    assert (torch.gather(by_max, -2, index) > 0).all()
    assert torch.equal(by_sum.abs(), by_max.abs())  # same vectors, only signs differ
    # near-tied |·| (a mirror pair ±x): the first of them decides, not rounding
    column = torch.tensor([[0.3], [-0.6], [0.6 + 1e-9], [0.1]], dtype=F64)
    assert torch.equal(fix_signs(column, "max_abs"), -column)
    assert torch.equal(fix_signs(-column, "max_abs"), -column)
    with pytest.raises(ValueError, match="pe_sign"):
        fix_signs(by_sum, "random")


@pytest.mark.parametrize("is_undirected", [True, False])
def test_pe_equals_pyg_add_laplacian_eigenvector_pe(is_undirected):
    W = _random_symmetric_weights(1, 19, seed=10)[0]  # connected, well-separated spectrum
    k = 8
    ours = _pe(W[None, None], k=k, gradient="stop")[0, 0]  # (N, k), first column included
    edge_index, edge_weight = dense_to_sparse(W)
    data = Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=19)
    torch.manual_seed(0)  # PyG flips column signs with the global RNG
    transform = AddLaplacianEigenvectorPE(k - 1, attr_name="pe", is_undirected=is_undirected)
    theirs = transform(data).pe  # (N, k − 1): PyG drops the first eigenvector
    theirs = theirs * torch.sign((ours[:, 1:] * theirs).sum(dim=0))  # align column signs
    difference = (ours[:, 1:] - theirs).abs().max().item()
    print(f"laplacian_pe vs PyG LapPE (is_undirected={is_undirected}): {difference:.2e}")
    assert difference <= 1e-12
    # the first column is the null vector D^1/2·1 / ‖·‖ (the epsilon shift leaves vectors alone)
    null = W.sum(-1).sqrt()
    assert (ours[:, 0] - null / null.norm()).abs().max() <= 1e-12


# ----------------------------------------------------------------------------------------------
# Laplacian PE: gradients


def _pe_gradient(A, gradient, k, seed=11):
    A = A.clone().requires_grad_()
    pe = _pe(A, k=k, gradient=gradient, tau=1e-6)
    weights = torch.randn(pe.shape, generator=_generator(seed), dtype=pe.dtype)
    (pe * weights).sum().backward()
    return A.grad


def _degenerate_graphs(n_nodes=6):
    identity = torch.eye(n_nodes, dtype=F64)  # loops only: L = eps·I, every eigenvalue equal
    complete = 0.5 * (torch.ones(n_nodes, n_nodes, dtype=F64) - identity)  # 0 and n/(n−1) × (n−1)
    return {"identity": identity, "complete": complete}


@pytest.mark.parametrize("name", ["identity", "complete"])
def test_full_gradient_is_unusable_on_repeated_eigenvalues_and_safe_is_finite(name):
    """Full: NaN where LAPACK returns the tied eigenvalues bit for bit equal, which only the
    diagonal L (identity) guarantees; else 1/gap of a rounding-sized gap, beyond 1e10
    (tests/jaxbrr/test_graph.py UNUSABLE_GRADIENT says why, and which kernels break the ties)."""
    A = _degenerate_graphs()[name][None, None]  # (1, 1, N, N)
    full = _pe_gradient(A, "full", k=4)
    if name == "identity":
        assert torch.isnan(full).any()
    else:
        assert not torch.isfinite(full).all() or full.abs().max() > 1e10
    assert torch.isfinite(_pe_gradient(A, "safe", k=4)).all()


def test_safe_gradient_equals_full_on_separated_spectrum():
    A = _random_symmetric_weights(6, 8, seed=12).reshape(2, 3, 8, 8)
    gaps = torch.diff(torch.linalg.eigvalsh(normalized_laplacian(A, 1e-4)), dim=-1)
    assert gaps.min() > 1e-3  # far above tau = 1e-6
    full = _pe_gradient(A, "full", k=5)
    safe = _pe_gradient(A, "safe", k=5)
    difference = (safe - full).abs().max().item()
    print(f"safe vs full eigh gradient, separated spectrum, float64: {difference:.2e}")
    assert difference <= 1e-10


def test_safe_eigh_gradcheck():
    X = torch.randn(2, 6, 6, generator=_generator(13), dtype=F64, requires_grad=True)
    weights = torch.randn(2, 6, 6, generator=_generator(14), dtype=F64)

    def sign_invariant(X):
        eigenvalues, vectors = SafeEigh.apply(0.5 * (X + X.transpose(-1, -2)), 1e-9)
        return eigenvalues, vectors.square() * weights

    assert torch.autograd.gradcheck(sign_invariant, (X,))


def test_safe_eigh_masks_gaps_below_the_dtype_rounding_split():
    # jaxbrr's twin test: L = diag(λ) (V = ±I, Ā_ij = ±F_ij·skew_ij); a 2^-19 gap is above
    # tau = 1e-6 but below float32's rounding split (4.3e-5 here), a 2^-13 gap above both.
    eigenvalues = torch.cat([0.05 * torch.arange(16, dtype=F64), torch.tensor([1.0, 1.0 + 2.0**-19, 1.0 + 2.0**-13],
                                                                              dtype=F64)])
    cotangent = torch.randn(19, 19, generator=_generator(18), dtype=F64)
    skew = 0.5 * (cotangent - cotangent.T)
    for dtype in (torch.float32, F64):
        L = torch.diag(eigenvalues.to(dtype)).requires_grad_()
        SafeEigh.apply(L, 1e-6)[1].backward(cotangent.to(dtype))
        grad = L.grad.abs().double()
        tied, kept = grad[16, 17].item(), grad[17, 18].item()
        assert kept == pytest.approx(abs(skew[17, 18].item()) / (2.0**-13 - 2.0**-19), rel=1e-5)
        assert tied == (0.0 if dtype == torch.float32 else pytest.approx(abs(skew[16, 17].item()) / 2.0**-19, rel=1e-10))


def test_safe_eigh_float32_on_a_tied_cluster_follows_float64():
    # jaxbrr's twin test: the complete graph's 18 tied eigenvalues, a loss through the cluster's
    # projector only (unique gradient); float32 within p(n)·u·‖L‖ / gap of float64.
    n = 19
    L = torch.from_numpy(common_graph.normalized_laplacian(np.ones((n, n)) - np.eye(n), 1e-4))
    R = torch.randn(n, n, generator=_generator(19), dtype=F64)
    R = R + R.T

    def gradient(dtype):
        leaf = L.to(dtype).detach().requires_grad_()
        cluster = SafeEigh.apply(leaf, 1e-6)[1][:, 1:]
        ((cluster @ cluster.T) * R.to(dtype)).sum().backward()
        return leaf.grad.double()

    expected, got = gradient(F64), gradient(torch.float32)
    eigenvalues = torch.linalg.eigvalsh(L)
    bound = (common_graph.eigensolver_backward_error(n) * torch.finfo(torch.float32).eps / 2 * eigenvalues.max()
             / (eigenvalues[1] - eigenvalues[0])).item()
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    print(f"SafeEigh float32 vs float64 on an 18-fold tie: {error:.2e} (bound {bound:.2e})")
    assert error <= bound


def test_stop_gradient_gives_no_gradient_to_A():
    A = _random_symmetric_weights(2, 6, seed=15)[None].requires_grad_()
    pe = _pe(A, k=3, gradient="stop")
    assert not pe.requires_grad
    (pe.sum() + (A * 0).sum()).backward()
    assert torch.equal(A.grad, torch.zeros_like(A))


# ----------------------------------------------------------------------------------------------
# Laplacian PE: the original's guards


def test_pe_guards_leave_a_well_conditioned_graph_unchanged():
    A = _random_symmetric_weights(3, 7, seed=16)[None]
    plain = _pe(A, k=4, guards=False)
    guarded = _pe(A, k=4, guards=True)
    assert (plain - guarded).abs().max() <= 1e-13


def test_pe_guards_degree_floor_and_ill_conditioned_shift(monkeypatch):
    # isolated node 0: with the 1e-6 floor its row of L stays e_0, as without guards
    A = _random_symmetric_weights(1, 5, seed=17)
    A[:, 0, :] = 0.0
    A[:, :, 0] = 0.0
    floored = graph._laplacian_unshifted(A, degree_floor=graph.ORIGINAL_DEGREE_FLOOR)
    assert torch.equal(floored, normalized_laplacian(A, 0.0))
    # epsilon 0 leaves λ0 = 0: cond > 1e6, so that graph gets +1e-3·I before eigh
    seen = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda m: (seen.append(m), eigh(m))[1])
    _pe(A[None], k=3, epsilon=0.0, guards=True)
    assert abs(torch.linalg.eigvalsh(seen[0]).min() - 1e-3) <= 1e-12


# ----------------------------------------------------------------------------------------------
# static graph


def test_structural_adjacency_is_a_connected_symmetric_10_20_graph():
    A = structural_adjacency("ref19")
    assert A.shape == (19, 19) and torch.equal(A, A.T)
    assert torch.equal(A.diagonal(), torch.zeros(19, dtype=F64))
    assert A.sum() == 2 * len(REF19_NEIGHBOURS)
    name = {n: i for i, n in enumerate(REF19)}
    assert A[name["Fp1"], name["F3"]] == 1 and A[name["Fp1"], name["O2"]] == 0
    eigenvalues = torch.linalg.eigvalsh(normalized_laplacian(A, 0.0))
    assert (eigenvalues.abs() < 1e-12).sum() == 1  # one component
    # no degenerate eigenspace: the PE is unique up to column signs
    assert torch.diff(eigenvalues).min() > 1e-3
    pe = static_pe("ref19", 16, "max_abs")
    assert pe.shape == (19, 16)
    assert (pe - _pe(A[None, None], k=16)[0, 0]).abs().max() <= 1e-12


def test_static_pe_rejects_bipolar():
    with pytest.raises(ValueError, match=r"ref19 only.*'bipolar'.*use_dynamic_pe: true"):
        static_pe("bipolar", 16, "sum")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_edge_features_and_adjacency_never_hold_the_host_back_on_cuda():
    """No op of the similarity and the top-k adjacency waits for the GPU (an index made on the
    CPU into a CUDA tensor would: a blocking host copy at each use). eigh, next, does, by design."""
    electrodes = torch.randn(2, 19, 64, 8, device="cuda")  # (B, N, L, D)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        similarity = graph.edge_features(electrodes, "cosine", False)  # (B, E, L)
        dense = graph.adjacency(F.softplus(similarity), 19, 3, 1e-4)  # (B, L, N, N)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert dense.shape == (2, 64, 19, 19) and dense.is_cuda
