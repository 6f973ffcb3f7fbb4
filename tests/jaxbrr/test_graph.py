"""jaxbrr.graph against torchref.graph (the oracle, float64 and float32), the safe eigh VJP on
degenerate and well-separated spectra, and eigh on the kept steps only."""

from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import checkify
from jax.test_util import check_grads

from common import graph as common_graph
from common.data.montage import REF19_NEIGHBOURS
from jaxbrr import graph as jaxbrr_graph
from jaxbrr.graph import (
    adjacency,
    edge_features,
    edge_pairs,
    fix_signs,
    laplacian_pe,
    normalized_laplacian,
    safe_eigh,
    static_pe,
    structural_adjacency,
)
from jaxbrr.train.step import checkify_failure
from parity.compare import assert_within_bounds, compare_arrays
from parity.tolerances import eigenvector_bounds, eigenvector_gradient_bound, unit_roundoff
from torchref import graph as torch_graph


def _rng(seed):
    return np.random.default_rng(seed)


def _to_torch(array, dtype):
    return torch.tensor(np.asarray(array, dtype=np.float64)).to(getattr(torch, dtype))


def _to_jax(array, dtype):
    return jnp.asarray(np.asarray(array, dtype=np.float64), dtype=dtype)


def _torch_value_and_gradient(function, inputs, weights, dtype):
    """function(*inputs) and d Σ(function·weights) / d inputs, in torch."""
    leaves = [_to_torch(x, dtype).requires_grad_() for x in inputs]
    out = function(*leaves)
    (out * _to_torch(weights, dtype)).sum().backward()
    return out.detach().numpy(), [leaf.grad.numpy() for leaf in leaves]


def _jax_value_and_gradient(function, inputs, weights, dtype):
    """function(*inputs) and d Σ(function·weights) / d inputs, in JAX."""
    leaves = [_to_jax(x, dtype) for x in inputs]

    @jax.jit  # one compilation instead of one per eager op
    def value_and_gradient(leaves, weights):
        out, vjp = jax.vjp(function, *leaves)
        return out, vjp(weights)

    out, grads = value_and_gradient(leaves, _to_jax(weights, dtype))
    return np.asarray(out), [np.asarray(g) for g in grads]


def _compare(name, dtype, torch_result, jax_result):
    """Value and gradients within the "layer" row of parity/tolerances.py; prints the worst."""
    (expected, expected_grads), (got, grads) = torch_result, jax_result
    pairs = [("value", got, expected)] + [(f"grad {i}", g, e) for i, (g, e) in
                                          enumerate(zip(grads, expected_grads, strict=True))]
    rows = [compare_arrays(label, g, e, "layer", dtype) for label, g, e in pairs]
    print(f"{name} {dtype}: " + ", ".join(f"{row.name} {row.max_rel:.2e}" for row in rows))
    assert all(np.isfinite(g).all() for g in grads)
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]


def _random_symmetric_weights(n_graphs, n_nodes, seed, density=1.0):
    """Symmetric W >= 0 with zero diagonal, (G, N, N) float64 numpy."""
    rng = _rng(seed)
    W = (rng.random((n_graphs, n_nodes, n_nodes)) + 0.1) * (
        rng.random((n_graphs, n_nodes, n_nodes)) < density
    )
    W = np.triu(W, k=1)
    return W + np.swapaxes(W, -1, -2)


# ----------------------------------------------------------------------------------------------
# edges


def test_edge_pairs_equal_torchref():
    rows, cols = edge_pairs(19)
    torch_rows, torch_cols = torch_graph.edge_pairs(19)
    assert len(rows) == 171
    assert np.array_equal(rows, torch_rows.numpy()) and np.array_equal(cols, torch_cols.numpy())


@pytest.mark.parametrize("guards", [False, True])
@pytest.mark.parametrize("kind", ["cosine", "correlation"])
def test_edge_features_equal_torchref_with_a_flat_electrode(dtype, kind, guards):
    x = _rng(0).standard_normal((2, 5, 3, 8))  # (B, N, L, D)
    x[0, 1] = 0.0 if kind == "cosine" else 1.5  # all-zero / constant electrode in sample 0
    x[1, 3, 1] = 0.0  # and one zero vector at a single step
    weights = _rng(1).standard_normal((2, 10, 3))  # (B, E, L)
    # 1. torch
    expected = _torch_value_and_gradient(
        lambda e: torch_graph.edge_features(e, kind, guards), [x], weights, dtype
    )
    # 2. jax
    got = _jax_value_and_gradient(lambda e: edge_features(e, kind, guards), [x], weights, dtype)
    # 3. compare
    _compare(f"edge_features {kind} guards={guards}", dtype, expected, got)
    rows, cols = edge_pairs(5)
    touches = (rows == 1) | (cols == 1)
    assert np.array_equal(got[0][0, touches], np.zeros_like(got[0][0, touches]))
    # at the zero electrode: b / (eps·‖b‖) for cosine, finite and huge, as torch's per-norm clamp;
    # b' / (sqrt(eps')·‖b'‖) for correlation (centred, the original's additive eps')
    assert np.abs(got[1][0][0, 1]).max() > (1e6 if kind == "cosine" else 1e3)


def test_edge_features_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="'cosine' or 'correlation'"):
        edge_features(jnp.zeros((1, 2, 1, 3)), "euclidean", guards=False)


# ----------------------------------------------------------------------------------------------
# adjacency


def test_adjacency_equals_torchref(dtype):
    weights = _rng(2).random((2, 171, 7))  # continuous: no ties among the kept weights
    weights[0, :, 3] = 0.0  # a step without any edge: identity (ties only below threshold)
    weights[1, :40, 5] = 5e-5  # weights under the threshold
    cotangent = _rng(3).standard_normal((2, 7, 19, 19))
    # 1. torch
    expected = _torch_value_and_gradient(
        lambda w: torch_graph.adjacency(w, 19, 3, 1e-4), [weights], cotangent, dtype
    )
    # 2. jax
    got = _jax_value_and_gradient(lambda w: adjacency(w, 19, 3, 1e-4), [weights], cotangent, dtype)
    # 3. compare
    _compare("adjacency", dtype, expected, got)
    assert np.array_equal(got[0][0, 3], np.eye(19))


def test_adjacency_tie_rule_keeps_lowest_indices_in_both_twins():
    # row 0 of the 6-node graph: 0.5 at columns 1, 2, 3, 5; top-2 keeps 1 and 2 in both
    # (torch.topk on CPU kept 3 and 5: torchref sorts stably instead, see adjacency's docstring)
    weights = np.zeros(15)
    weights[[0, 1, 2, 4]] = 0.5  # pairs (0,1) (0,2) (0,3) (0,5)
    A = adjacency(jnp.asarray(weights, jnp.float32)[None, :, None], 6, top_k=2, threshold=1e-4)
    kept_by_row_0 = np.flatnonzero(np.asarray(A[0, 0, 0]) == 0.5)  # kept by row 0 and by its row
    assert kept_by_row_0.tolist() == [1, 2]
    B = torch_graph.adjacency(torch.tensor(weights, dtype=torch.float32)[None, :, None], 6, top_k=2, threshold=1e-4)
    np.testing.assert_array_equal(B.numpy(), np.asarray(A))


def test_a_nan_edge_weight_reaches_the_adjacency_in_both_twins():
    """NaN is not <= threshold: it stays, ranked first by top-k in both frameworks. A comparison
    `w > threshold` dropped it, so NaN edge weights left an empty, finite graph in silence."""
    weights = np.full(15, 0.5)
    weights[3] = np.nan  # the pair (0, 4)
    weights[7] = -np.nan  # (1, 4): a negative NaN, which XLA's top-k ranked last and torch's first
    A = np.asarray(adjacency(jnp.asarray(weights, jnp.float32)[None, :, None], 6, top_k=2, threshold=1e-4))
    B = torch_graph.adjacency(torch.tensor(weights, dtype=torch.float32)[None, :, None], 6, top_k=2,
                              threshold=1e-4).numpy()
    np.testing.assert_array_equal(A, B)  # NaN where NaN, bit for bit elsewhere
    assert np.isnan(A[0, 0, 0, 4]) and np.isnan(A[0, 0, 4, 0]) and np.isnan(A[0, 0, 1, 4])


@pytest.mark.parametrize("gradient", ["safe", "full"])
def test_a_graph_with_a_nan_edge_has_a_nan_pe_in_both_twins(gradient):
    """JAX's eigh returns NaN for a non-finite matrix; LAPACK's fails to converge and torch
    raised. torchref gives that graph NaN eigenvectors too; the other graphs are untouched."""
    weights = _rng(4).random((1, 15, 2)) + 0.5  # two steps of a 6-node graph
    weights[0, 3, 1] = np.nan  # the second step's pair (0, 4)
    A = adjacency(jnp.asarray(weights), 6, top_k=3, threshold=1e-4)
    pe = np.asarray(laplacian_pe(A, 3, "max_abs", gradient, 1e-6, 1, 1e-5, guards=False))
    expected = torch_graph.laplacian_pe(torch.tensor(np.asarray(A)), 3, "max_abs", gradient, 1e-6, 1, 1e-5,
                                        guards=False).numpy()
    assert np.isnan(pe[0, 1]).all() and np.isnan(expected[0, 1]).all()
    assert np.isfinite(pe[0, 0]).all() and np.isfinite(expected[0, 0]).all()  # compared elsewhere


def test_adjacency_rejects_bad_shapes():
    with pytest.raises(ValueError, match="19 nodes need 171"):
        adjacency(jnp.zeros((1, 170, 2)), 19, 3, 1e-4)
    with pytest.raises(ValueError, match="top_k"):
        adjacency(jnp.zeros((1, 171, 2)), 19, 20, 1e-4)


# ----------------------------------------------------------------------------------------------
# Laplacian


def test_normalized_laplacian_equals_torchref(dtype):
    W = _random_symmetric_weights(3, 9, seed=4, density=0.5)
    W[:, 5, :] = W[:, :, 5] = 0.0  # isolated node
    W[:, 1, 1] = 0.8  # a self-loop: kept, as the original keeps an isolated node's fallback loop
    cotangent = _rng(5).standard_normal(W.shape)
    # 1. torch
    expected = _torch_value_and_gradient(
        lambda a: torch_graph.normalized_laplacian(a, 1e-4), [W], cotangent, dtype
    )
    # 2. jax
    got = _jax_value_and_gradient(lambda a: normalized_laplacian(a, 1e-4), [W], cotangent, dtype)
    # 3. compare
    _compare("normalized_laplacian", dtype, expected, got)


# ----------------------------------------------------------------------------------------------
# Laplacian PE against torchref


@pytest.mark.parametrize(
    ("gradient", "interval", "epsilon", "guards"),
    [
        ("safe", 1, 1e-4, False),
        ("full", 3, 1e-4, False),
        ("safe", 2, 0.0, True),  # epsilon 0: cond = inf, the guard shifts by 1e-3·I
    ],
)
@pytest.mark.parametrize("sign", ["max_abs", "sum"])
def test_laplacian_pe_equals_torchref(dtype, sign, gradient, interval, epsilon, guards):
    # random connected graphs whose 5 smallest eigenvalues are well separated: float32
    # eigenvectors drift like eps/gap, so smaller gaps need looser float32 tolerances
    A = _random_symmetric_weights(2 * 5, 7, seed=13, density=0.5).reshape(2, 5, 7, 7)
    laplacian = torch_graph.normalized_laplacian(torch.tensor(A), 0.0)  # (B, L, N, N)
    eigenvalues = torch.linalg.eigvalsh(laplacian).numpy()
    assert eigenvalues[..., 1].min() > 0.05  # connected
    assert np.diff(eigenvalues[..., :5], axis=-1).min() > 0.1
    cotangent = _rng(7).standard_normal((2, 5, 7, 4))
    args = (4, sign, gradient, 1e-6, interval, epsilon, guards)
    # 1. torch
    expected = _torch_value_and_gradient(
        lambda a: torch_graph.laplacian_pe(a, *args), [A], cotangent, dtype
    )
    # 2. jax
    got = _jax_value_and_gradient(lambda a: laplacian_pe(a, *args), [A], cotangent, dtype)
    # 3. compare: not the layer tier, whose fixed 1e-5 ignores the spectrum; bounds derived from
    # the gaps (parity.tolerances.eigenvector_bounds, eigenvector_gradient_bound): the decomposed
    # matrix is L + ε·I, or L + 1e-3·I where the guard shifts an ill-conditioned one (same gaps)
    (value, (grad,)), (expected_value, (expected_grad,)) = got, expected
    decomposed = laplacian.numpy()[:, ::interval]
    bounds = np.repeat(eigenvector_bounds(decomposed, 4, dtype), interval, axis=1)[:, :5]  # (B, L, K)
    gradient_rtol = eigenvector_gradient_bound(decomposed, 4, dtype)
    value_ratio = assert_within_bounds("pe", value, expected_value, bounds[:, :, None, :])
    assert np.isfinite(grad).all()
    grad_ratio = assert_within_bounds("∂A", grad, expected_grad, gradient_rtol * np.abs(expected_grad).max())
    print(f"laplacian_pe {sign} {gradient} {dtype}: |Δ pe| at most {value_ratio:.3g} of its Davis-Kahan "
          f"bound, |Δ ∂A| at most {grad_ratio:.3g} of {gradient_rtol:.3g}·max|∂A|")


def test_laplacian_pe_guards_shift_an_ill_conditioned_graph(x64):
    # epsilon 0 leaves λ0 = 0, so cond > 1e6 and the graph gets +1e-3·I: same vectors, and the
    # PE equals the unguarded one with epsilon = 1e-3
    A = jnp.asarray(_random_symmetric_weights(2, 6, seed=8))[None]  # (1, 2, N, N)
    guarded = jax.jit(lambda a: laplacian_pe(a, 3, "max_abs", "safe", 1e-6, 1, 0.0, True))(A)
    shifted = jax.jit(lambda a: laplacian_pe(a, 3, "max_abs", "safe", 1e-6, 1, 1e-3, False))(A)
    assert np.abs(np.asarray(guarded - shifted)).max() <= 1e-12


def test_laplacian_pe_stop_has_no_gradient(x64):
    A = jnp.asarray(_random_symmetric_weights(2, 6, seed=9))[None]
    gradient = jax.grad(lambda a: laplacian_pe(a, 3, "sum", "stop", 1e-6, 1, 1e-4, False).sum())(A)
    assert np.array_equal(np.asarray(gradient), np.zeros(A.shape))


def test_laplacian_pe_rejects_bad_arguments():
    A = jnp.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="k_eigenvectors"):
        laplacian_pe(A, 5, "sum", "safe", 1e-6, 1, 1e-4, False)
    with pytest.raises(ValueError, match="pe_gradient"):
        laplacian_pe(A, 2, "sum", "exact", 1e-6, 1, 1e-4, False)
    with pytest.raises(ValueError, match="semi_dynamic_interval"):
        laplacian_pe(A, 2, "sum", "safe", 1e-6, 0, 1e-4, False)
    with pytest.raises(ValueError, match="pe_sign"):
        laplacian_pe(A, 2, "random", "safe", 1e-6, 1, 1e-4, False)
    with pytest.raises(ValueError, match="eigh_calls"):
        laplacian_pe(A, 2, "sum", "safe", 1e-6, 1, 1e-4, False, "parallel")


def test_fix_signs_tie_rule_equals_torchref(x64):
    # near-tied |·| (a mirror pair ±x): the first of them decides, not rounding
    column = np.array([[0.3], [-0.6], [0.6 + 1e-9], [0.1]])
    for sign in ("max_abs", "sum"):
        for c in (column, -column):
            expected = torch_graph.fix_signs(torch.tensor(c), sign).numpy()
            assert np.array_equal(np.asarray(fix_signs(jnp.asarray(c), sign)), expected)
    assert np.array_equal(np.asarray(fix_signs(jnp.asarray(column), "max_abs")), -column)


# ----------------------------------------------------------------------------------------------
# eigh only on the kept steps


def _eigh_operand_shapes(jaxpr):
    """Operand shapes of every eigh in a jaxpr, sub-jaxprs (jit, custom_vjp) included."""
    shapes = []
    for equation in jaxpr.eqns:
        if equation.primitive.name == "eigh":
            shapes += [tuple(v.aval.shape) for v in equation.invars]
        for param in equation.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    shapes += _eigh_operand_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    shapes += _eigh_operand_shapes(sub)
    return shapes


def assert_same_numbers(name, got, expected) -> None:
    """Two programs computing the same float64 numbers in another order or fusion: the "layer"
    float64 row (XLA may compile the same elementwise step differently in each, so bit for bit is
    rounding's choice; eigenvectors move by u·‖L‖/gap ~ 1e-16/gap)."""
    assert np.asarray(got).dtype == np.asarray(expected).dtype == np.float64
    row = compare_arrays(name, got, expected, "layer", "float64")
    assert row.passed, row


@pytest.mark.parametrize("gradient", ["full", "stop", "safe"])
def test_eigh_runs_on_kept_steps_only(x64, gradient):
    A = jnp.asarray(_random_symmetric_weights(2 * 12, 6, seed=10).reshape(2, 12, 6, 6))

    def pe(a):
        return laplacian_pe(a, 4, "max_abs", gradient, 1e-6, 5, 1e-4, False)

    # forward and forward + backward: eigh sees steps 0, 5, 10 only (the eigh JVP recomputes it)
    for function in (pe, jax.grad(lambda a: (pe(a) ** 3).sum())):
        shapes = _eigh_operand_shapes(jax.make_jaxpr(function)(A).jaxpr)
        assert shapes and all(shape == (2, 3, 6, 6) for shape in shapes), shapes
    held = np.asarray(jax.jit(pe)(A))  # (B, L, N, K)
    assert held.shape == (2, 12, 6, 4)
    for start, stop in [(0, 5), (5, 10), (10, 12)]:
        assert np.array_equal(
            held[:, start:stop], np.repeat(held[:, start : start + 1], stop - start, 1)
        )
        single = laplacian_pe(A[:, start : start + 1], 4, "max_abs", gradient, 1e-6, 1, 1e-4, False)
        assert_same_numbers(f"step {start}", held[:, start], np.asarray(single)[:, 0])


@pytest.mark.parametrize("gradient", ["full", "stop", "safe"])
@pytest.mark.parametrize("guards", [False, True])
def test_looped_eigh_calls_give_the_batched_numbers(x64, gradient, guards):
    """eigh_calls=looped (one LAPACK call per graph under lax.map, for several CPU devices)
    hands eigh one (N, N) matrix at a time and gives the PE and its gradient of one batched
    call (the same routine on the same matrices; XLA:CPU at -O2 gives them bit for bit on Intel
    and AMD hosts, at -O0 not: float64 and its row, assert_same_numbers); guards loop the cond too."""
    A = jnp.asarray(_random_symmetric_weights(2 * 6, 6, seed=13).reshape(2, 6, 6, 6))
    weights = jnp.asarray(_rng(14).standard_normal((2, 6, 6, 4)))

    def pe(calls):
        return lambda a: laplacian_pe(a, 4, "max_abs", gradient, 1e-6, 2, 1e-4, guards, calls)

    def value_and_gradient(calls):
        value, grad = jax.jit(jax.value_and_grad(lambda a: (pe(calls)(a) * weights).sum()))(A)
        return np.asarray(jax.jit(pe(calls))(A)), np.asarray(value), np.asarray(grad)

    shapes = _eigh_operand_shapes(jax.make_jaxpr(jax.grad(lambda a: pe("looped")(a).sum()))(A).jaxpr)
    assert shapes and all(shape == (6, 6) for shape in shapes), shapes
    batched, looped = value_and_gradient("batched"), value_and_gradient("looped")
    assert np.abs(batched[2]).max() > 0 or gradient == "stop"
    for name, b, lo in zip(["pe", "value", "gradient"], batched, looped, strict=True):
        assert_same_numbers(name, lo, b)


# ----------------------------------------------------------------------------------------------
# safe eigh


# Two equal eigenvalues come out of LAPACK either bit for bit equal (then the full backward's 1/gap
# meets a 0: NaN) or a rounding apart: for a backward-stable solver at most about n·u·‖L‖ (n = 6,
# u = 2^-53, ‖L‖ <= 2 for a normalised Laplacian), so |1/gap| >= ~7e14 in float64. Which one
# depends on the BLAS kernels (OpenBLAS's Prescott kernels break the exact ties of the complete
# graph that its SkylakeX and Haswell ones give: a review measured a finite full gradient of 8.3e14
# there). Either way the full gradient is unusable; a diagonal Laplacian alone ties exactly.
UNUSABLE_GRADIENT = 1e10


def unusable(gradient: np.ndarray) -> bool:
    """NaN, or beyond UNUSABLE_GRADIENT: the full eigh gradient at eigenvalues that are tied."""
    finite = np.isfinite(gradient)
    return bool(not finite.all() or np.abs(gradient).max() > UNUSABLE_GRADIENT)


def _degenerate_graphs(n_nodes=6):
    eye = np.eye(n_nodes)
    complete = 0.5 * (np.ones((n_nodes, n_nodes)) - eye)  # eigenvalues 0 and n/(n−1) × (n−1)
    half = n_nodes // 2
    two_components = np.zeros((n_nodes, n_nodes))  # two equal triangles: 0, 0, 1.5 × 4
    two_components[:half, :half] = two_components[half:, half:] = 1 - np.eye(half)
    return {"identity": eye, "two_components": two_components, "complete": complete}


@pytest.mark.parametrize("name", ["identity", "two_components", "complete"])
def test_safe_gradient_is_finite_on_repeated_eigenvalues_and_full_is_not(x64, name):
    A = jnp.asarray(_degenerate_graphs()[name])[None, None]  # (1, 1, N, N)
    eigenvalues = np.linalg.eigvalsh(np.asarray(normalized_laplacian(A, 1e-4)))
    assert (np.diff(eigenvalues) < 1e-12).any()  # repeated eigenvalues indeed
    weights = jnp.asarray(_rng(11).standard_normal((1, 1, 6, 4)))

    def gradient_of(mode):
        def loss(a):
            return (laplacian_pe(a, 4, "max_abs", mode, 1e-6, 1, 1e-4, False) * weights).sum()

        return np.asarray(jax.jit(jax.grad(loss))(A))

    full = gradient_of("full")
    assert np.isnan(full).any() if name == "identity" else unusable(full)  # only a diagonal L ties exactly
    safe = gradient_of("safe")
    assert np.isfinite(safe).all() and np.abs(safe).max() < 10


@pytest.mark.parametrize("calls", ["batched", "looped"])
def test_checkify_names_this_projects_eigh_line_for_the_nan_of_its_backward(calls):
    """The NaN of eigh's derivative on repeated eigenvalues is reported at jaxbrr/graph.py's eigh
    call, not inside jax (jnp.linalg.eigh is a jit of its own, and an op traced in it records no
    frame above it: jaxbrr once reported jax/_src/numpy/linalg.py:940)."""
    A = jnp.asarray(_degenerate_graphs()["identity"], jnp.float32)[None, None]
    weights = jnp.asarray(_rng(11).standard_normal((1, 1, 6, 4)), jnp.float32)

    def loss(a):
        return (laplacian_pe(a, 4, "max_abs", "full", 1e-6, 1, 1e-4, False, calls) * weights).sum()

    error, _ = jax.jit(checkify.checkify(jax.grad(loss), errors=checkify.float_checks))(A)
    report = checkify_failure(error).splitlines()
    assert report[0].startswith("nan generated by primitive"), report
    where = report[1].split()
    assert where[0] == "at" and where[-1] == "_eigh", report
    assert Path(where[1].rsplit(":", 1)[0]) == Path(jaxbrr_graph.__file__), report


def test_safe_eigh_equals_eigh_gradient_on_separated_spectrum(x64):
    X = _rng(12).standard_normal((3, 7, 7))
    X = jnp.asarray(X + np.swapaxes(X, -1, -2))
    gaps = np.diff(np.linalg.eigvalsh(np.asarray(X)), axis=-1)
    assert gaps.min() > 1e-3  # far above tau
    weights = jnp.asarray(_rng(13).standard_normal((3, 7, 7)))
    value_weights = jnp.asarray(_rng(14).standard_normal((3, 7)))

    def loss(eigh):
        def f(x):
            eigenvalues, vectors = eigh(x)
            return (vectors * weights).sum() + (eigenvalues * value_weights).sum()

        return f

    exact = jax.grad(loss(jnp.linalg.eigh))(X)
    safe = jax.grad(loss(lambda x: safe_eigh(x, 1e-6)))(X)
    difference = float(jnp.abs(safe - exact).max())
    print(f"safe_eigh vs jax.grad(eigh), separated spectrum, float64: {difference:.2e}")
    assert difference <= 1e-10


def test_safe_eigh_check_grads(x64):
    X = jnp.asarray(_rng(15).standard_normal((2, 6, 6)))
    weights = jnp.asarray(_rng(16).standard_normal((2, 6, 6)))

    def sign_invariant(x):
        eigenvalues, vectors = safe_eigh(0.5 * (x + jnp.swapaxes(x, -1, -2)), 1e-9)
        return eigenvalues, jnp.square(vectors) * weights

    check_grads(sign_invariant, (X,), order=1, modes=["rev"])


def test_safe_eigh_equals_torchref_on_a_degenerate_spectrum(x64):
    # two equal triangles: eigenvalues ε ×2 and 1.5 + ε ×4. A loss that depends only on the
    # eigenspaces (projector of the null space, group-constant eigenvalue weights) has a unique
    # gradient; the mask drops only rotations inside the groups, which this loss ignores, so
    # both safe VJPs must agree although their eigenvector bases do not.
    L = np.asarray(normalized_laplacian(jnp.asarray(_degenerate_graphs()["two_components"]), 1e-4))
    R = _rng(17).standard_normal((6, 6))
    R = R + R.T
    value_weights = np.array([0.3, 0.3, -1.2, -1.2, -1.2, -1.2])

    def loss(eigenvalues, vectors, xp):
        null = vectors[:, :2]
        return ((null @ null.T) * xp.asarray(R)).sum() + (
            eigenvalues * xp.asarray(value_weights)
        ).sum()

    # 1. torch
    leaf = torch.tensor(L).requires_grad_()
    eigenvalues, vectors = torch_graph.SafeEigh.apply(leaf, 1e-6)
    loss(eigenvalues, vectors, torch).backward()
    expected = leaf.grad.numpy()
    # 2. jax
    got = np.asarray(jax.jit(jax.grad(lambda m: loss(*safe_eigh(m, 1e-6), jnp)))(jnp.asarray(L)))
    # 3. compare
    row = compare_arrays("safe_eigh gradient", got, expected, "layer", "float64")
    print(f"safe_eigh vs torchref SafeEigh, degenerate spectrum, float64: {row.max_rel:.2e}")
    assert np.isfinite(got).all() and row.passed, row.reason


def test_safe_eigh_masks_gaps_below_the_dtype_rounding_split():
    # L = diag(λ): eigh returns λ exactly and V = ±I, so Ā_ij = ±F_ij·skew_ij. A gap of 2^-19
    # (1.9e-6) is above tau = 1e-6 but below float32's rounding split (common.graph.eigenvalue_split:
    # 361 · 2^-23 · max|λ| = 4.3e-5 at n = 19): float32 masks it (exactly 0), float64 keeps it
    # (1/gap); a gap of 1.2e-4 is kept in both.
    eigenvalues = np.r_[0.05 * np.arange(16), 1.0, 1.0 + 2.0**-19, 1.0 + 2.0**-13]  # exact in float32
    cotangent = _rng(18).standard_normal((19, 19))
    skew = 0.5 * (cotangent - cotangent.T)
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            L = jnp.diag(jnp.asarray(eigenvalues, dtype))
            _, backward = jax.vjp(lambda m: safe_eigh(m, 1e-6)[1], L)
            (grad,) = backward(jnp.asarray(cotangent, dtype))
            grad = np.abs(np.asarray(grad, np.float64))
        tied, kept = grad[16, 17], grad[17, 18]
        np.testing.assert_allclose(kept, abs(skew[17, 18]) / (2.0**-13 - 2.0**-19), rtol=1e-5)
        if dtype == jnp.float32:
            assert tied == 0.0
        else:
            np.testing.assert_allclose(tied, abs(skew[16, 17]) / 2.0**-19, rtol=1e-10)


def _complete_graph_cluster_loss(n_nodes=19):
    """The complete graph's Laplacian (eigenvalues ε once and n/(n−1) + ε × (n−1), exactly tied)
    and a loss that sees the tied eigenspace only through its projector (unique gradient, which
    the mask must leave exact): R ∘ P_cluster summed, P = V_c V_cᵀ over columns 1..n−1."""
    A = np.ones((n_nodes, n_nodes)) - np.eye(n_nodes)
    L = common_graph.normalized_laplacian(A, 1e-4)
    R = _rng(19).standard_normal((n_nodes, n_nodes))
    return L, R + R.T


def test_safe_eigh_float32_on_a_tied_cluster_follows_float64():
    # float32 returns the 18 tied eigenvalues split by rounding (up to ~1e-6 apart here: above
    # tau = 1e-6 for some pairs); unmasked, those pairs turned rounding noise into 5 % of the
    # gradient. With the mask at the rounding split, float32 must agree with float64's exact
    # gradient within one eigensolve's error through the cluster's gap to the rest (1.06):
    # p(n)·u·‖L‖ / gap (parity.tolerances.eigenvector_gradient_bound's factors, one side).
    L, R = _complete_graph_cluster_loss()

    def gradient(dtype):
        def loss(m):
            _, V = safe_eigh(m, 1e-6)
            cluster = V[:, 1:]
            return jnp.sum((cluster @ cluster.T) * jnp.asarray(R, dtype))

        with jax.enable_x64(dtype == jnp.float64):
            return np.asarray(jax.grad(loss)(jnp.asarray(L, dtype)), np.float64)

    expected, got = gradient(jnp.float64), gradient(jnp.float32)
    eigenvalues = np.linalg.eigvalsh(L)
    bound = (common_graph.eigensolver_backward_error(19) * unit_roundoff("float32") * eigenvalues.max()
             / (eigenvalues[1] - eigenvalues[0]))
    error = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"safe_eigh float32 vs float64 on an 18-fold tie: {error:.2e} (bound {bound:.2e})")
    assert error <= bound


# ----------------------------------------------------------------------------------------------
# static graph


@pytest.mark.parametrize("sign", ["max_abs", "sum"])
def test_static_pe_is_the_dynamic_pe_of_the_10_20_graph(x64, sign):
    """The static PE (numpy, common.graph, once for both twins) against jaxbrr's own dynamic path
    on the same graph (jaxbrr's Laplacian, jnp eigh, jaxbrr's sign rules), float64. The spectrum
    has no degenerate eigenspace (gaps > 1e-3), so the eigenvectors are unique up to sign."""
    A = structural_adjacency("ref19")
    assert np.array_equal(A, torch_graph.structural_adjacency("ref19").numpy())
    assert A.sum() == 2 * len(REF19_NEIGHBOURS)
    got = static_pe("ref19", 16, sign)  # float64 whatever jax_enable_x64 says
    expected = np.asarray(laplacian_pe(jnp.asarray(A)[None, None], 16, sign, "stop", 1e-6, 1, 0.0, False))[0, 0]
    assert got.dtype == np.float64 and got.shape == (19, 16)
    # two float64 eigensolves (numpy's LAPACK, jnp's): each column within the Davis-Kahan bound
    bounds = eigenvector_bounds(np.asarray(normalized_laplacian(jnp.asarray(A), 0.0)), 16, "float64")  # (16,)
    # `sum` is unstable by design on this mirror-symmetric graph: its antisymmetric
    # eigenvectors sum to ±1e-15, so rounding picks their sign; compare those up to sign
    decided = np.abs(expected.sum(axis=0)) > 1e-8 if sign == "sum" else np.ones(16, bool)
    ratio = assert_within_bounds("static pe", got[:, decided], expected[:, decided], bounds[decided])
    assert_within_bounds("static pe up to sign", np.abs(got), np.abs(expected), bounds)
    print(f"static_pe sign={sign} vs jaxbrr's dynamic PE of the same graph: {ratio:.2e} of the bound "
          f"({decided.sum()} columns)")


def test_static_pe_rejects_bipolar():
    with pytest.raises(ValueError, match=r"ref19 only.*'bipolar'.*use_dynamic_pe: true"):
        static_pe("bipolar", 16, "sum")
