"""Per-module parity at tiny size, float32 and float64: each torchref module and its jaxbrr twin
hold the same weights (parity/convert.py on the submodule pair), see the same input and must agree
to tolerance('layer', dtype).

Inputs are re-seeded (parity_nan_anchors.md §5.2 point 1): each module gets the activation the
torch tiny model computed for it on a real EEG batch (the `tiny` fixture), so a module's own error
is not mixed with drift inherited from the layers before it. Layouts: torch convolutions run
(B, C, T), jaxbrr's channels-last (B, T, C); the TCN and head tests move the axes explicitly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from einops import rearrange

import jaxbrr.gnn as jgnn
import jaxbrr.graph as jgraph
import jaxbrr.mamba as jmamba
import jaxbrr.tcn as jtcn
import torchref.gnn as tgnn
import torchref.graph as tgraph
import torchref.mamba as tmamba
import torchref.tcn as ttcn
from conftest import x64_enabled
from parity.compare import assert_within_bounds, compare_trees
from parity.tolerances import arbitrate, eigenvector_bounds

SEED = 7  # torch init of the standalone modules (the NNX side is overwritten by the table)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def check(name: str, jax_out, torch_out, dtype: str) -> None:
    """compare_trees on one output (torch the reference), printed before the assert."""
    report = compare_trees({name: jax_out}, {name: torch_out}, "layer", dtype)
    print(report.format())
    assert report.passed, report.first_failure


def as_inputs(array: np.ndarray, dtype: str) -> tuple[torch.Tensor, jax.Array]:
    """The same numbers for both sides, in `dtype`."""
    array = np.array(array, dtype=dtype)  # a copy: the shared fixture arrays are read-only
    return torch.from_numpy(array), jnp.asarray(array)


def node_sequences(tiny) -> np.ndarray:
    """The node stream's input: electrodes (B, N, L, D) -> (B·N, L, D), a writable copy."""
    return np.array(rearrange(tiny.torch_taps["electrodes"], "b n l d -> (b n) l d"))


# ----------------------------------------------------------------------------------------------
# TCN encoder and projection head


def test_tcn_encoder(tiny, twin, forward, dtype):
    cfg = tiny.config.model
    torch_tcn, jax_tcn = twin(ttcn.TCNEncoder(cfg.n_chans, cfg.tcn, generator()),
                              lambda rngs: jtcn.TCNEncoder(cfg.n_chans, cfg.tcn, rngs=rngs), dtype)
    x_torch, x_jax = as_inputs(tiny.x, dtype)  # (B, C, T)
    # 1. torch
    with torch.no_grad():
        torch_out = torch_tcn(x_torch)  # (B, D_tcn, L)
    # 2. jax
    jax_out = forward(jax_tcn, rearrange(x_jax, "b c t -> b t c"))  # (B, L, D_tcn)
    # 3. compare
    check("tcn", rearrange(jax_out, "b l d -> b d l"), torch_out, dtype)


@pytest.mark.parametrize("guards", [False, True], ids=["guards-none", "guards-original"])
def test_projection_head(tiny, twin, forward, dtype, guards):
    cfg = tiny.config.model
    d_tcn, stride = cfg.tcn.out_channels, cfg.tcn.stride_down
    torch_head, jax_head = twin(ttcn.ProjectionHead(d_tcn, cfg.n_chans, stride, guards, generator()),
                                lambda rngs: jtcn.ProjectionHead(d_tcn, cfg.n_chans, stride, guards, rngs=rngs),
                                dtype)
    h = tiny.torch_taps["from_electrodes"]  # (B, D_tcn, L)
    h = h / np.abs(h).max() * 1e3  # large enough for the ±50 clamp to act
    h[0, 3, 5], h[1, 0, 7], h[1, 2, 9] = np.nan, np.inf, -np.inf  # for the nan_to_num (or none)
    h_torch, h_jax = as_inputs(h, dtype)
    # 1. torch
    with torch.no_grad():
        torch_logits = torch_head(h_torch)  # (B, T)
    # 2. jax
    jax_logits = forward(jax_head, rearrange(h_jax, "b d l -> b l d"))  # (B, T)
    # 3. compare
    check("head", jax_logits, torch_logits, dtype)
    assert np.isfinite(torch_logits.numpy()).all() == guards  # without guards the NaN goes through


# ----------------------------------------------------------------------------------------------
# Mamba-2


def test_mamba2(tiny, twin, forward, dtype):
    m, ssm = tiny.config.model.node_mamba, tiny.config.model.ssm
    sizes = dict(d_model=m.d_model, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand, headdim=m.headdim,
                 scan=ssm.scan, chunk_size=ssm.chunk_size)
    torch_mixer, jax_mixer = twin(tmamba.Mamba2(**sizes, generator=generator()),
                                  lambda rngs: jmamba.Mamba2(**sizes, rngs=rngs), dtype)
    u_torch, u_jax = as_inputs(node_sequences(tiny), dtype)  # (B·N, L, D)
    # 1. torch
    with torch.no_grad():
        torch_out = torch_mixer(u_torch)  # (B·N, L, D)
    # 2. jax
    jax_out = forward(jax_mixer, u_jax)  # (B·N, L, D)
    # 3. compare
    check("mamba2", jax_out, torch_out, dtype)


def bimamba_pair(tiny, twin, dtype, guards: bool):
    cfg = tiny.config.model
    build = lambda rngs: jmamba.BiMamba2(  # noqa: E731
        cfg.node_mamba, cfg.ssm, guards, cfg.layernorm_eps, remat=False, rngs=rngs)
    return twin(tmamba.BiMamba2(cfg.node_mamba, cfg.ssm, guards, cfg.layernorm_eps, generator()), build, dtype)


@pytest.mark.parametrize("guards", [False, True], ids=["guards-none", "guards-original"])
def test_bimamba2(tiny, twin, forward, dtype, guards):
    torch_stack, jax_stack = bimamba_pair(tiny, twin, dtype, guards)
    u = node_sequences(tiny)  # (B·N, L, D)
    if guards:  # up to ±30, so the ±10 input clamp acts; a NaN for the nan_to_num
        u = u / np.abs(u).max() * 30
        u[3, 10, 2] = np.nan
    u_torch, u_jax = as_inputs(u, dtype)
    # 1. torch
    with torch.no_grad():
        torch_out = torch_stack(u_torch)  # (B·N, L, D)
    # 2. jax
    jax_out = forward(jax_stack, u_jax)  # (B·N, L, D)
    # 3. compare
    check("bimamba2", jax_out, torch_out, dtype)


def test_bimamba2_guards_map_inf_like_the_original(tiny, twin, forward, dtype):
    """The original's nan_to_num(nan=0, posinf=0, neginf=0) sends ±inf to 0 before the ±10 clamp
    (original_spec.md §2; torchref/mamba.py BiMamba2Layer); an inf in the node stream's input
    must come out the same in both frameworks."""
    torch_stack, jax_stack = bimamba_pair(tiny, twin, dtype, guards=True)
    u = node_sequences(tiny)
    u[3, 10, 2], u[5, 20, 4] = np.inf, -np.inf
    u_torch, u_jax = as_inputs(u, dtype)
    # 1. torch
    with torch.no_grad():
        torch_out = torch_stack(u_torch)  # (B·N, L, D)
    # 2. jax
    jax_out = forward(jax_stack, u_jax)  # (B·N, L, D)
    # 3. compare
    check("bimamba2", jax_out, torch_out, dtype)


# ----------------------------------------------------------------------------------------------
# graph functions


@pytest.mark.parametrize("kind", ["cosine", "correlation"])
@pytest.mark.parametrize("guards", [False, True], ids=["guards-none", "guards-original"])
def test_edge_features(tiny, dtype, kind, guards):
    e_torch, e_jax = as_inputs(tiny.torch_taps["electrodes"], dtype)  # (B, N, L, D)
    # 1. torch
    torch_out = tgraph.edge_features(e_torch, kind, guards)  # (B, E, L)
    # 2. jax
    jax_out = jax.jit(jgraph.edge_features, static_argnums=(1, 2))(e_jax, kind, guards)  # (B, E, L)
    # 3. compare
    check(f"edge_features[{kind}]", jax_out, torch_out, dtype)


def random_edge_weights(tiny, seed: int = 0) -> np.ndarray:
    """Positive weights (B, E, L) from a continuous law: no two equal, so top-k has no ties."""
    cfg = tiny.config.model
    steps = tiny.torch_taps["edge_weights"].shape[-1]
    return np.random.default_rng(seed).uniform(0.05, 1.0, (2, cfg.n_edges, steps))


@pytest.mark.parametrize("weights", ["learned", "random"])
def test_adjacency(tiny, dtype, weights):
    g, n = tiny.config.model.graph, tiny.config.model.n_chans
    w = tiny.torch_taps["edge_weights"] if weights == "learned" else random_edge_weights(tiny)
    w_torch, w_jax = as_inputs(w, dtype)  # (B, E, L)
    # 1. torch
    torch_out = tgraph.adjacency(w_torch, n, g.top_k, g.edge_threshold)  # (B, L, N, N)
    # 2. jax
    jax_out = jax.jit(jgraph.adjacency, static_argnums=(1, 2, 3))(w_jax, n, g.top_k, g.edge_threshold)
    # 3. compare
    check("adjacency", jax_out, torch_out, dtype)


# float32 eigenvectors move by about u·‖L‖/gap (Davis–Kahan) on either side: measured on random
# graphs, one with gap 0.018 put the two frameworks 9.6e-6 apart (torch 4.0e-6 and jax 5.6e-6
# from float64), past the layer tier's 6.6e-6; on graphs with all gaps >= 0.05, 2.6e-6.
WELL_SEPARATED_GAP = 0.05


def laplacian_gaps(A: np.ndarray, k: int, epsilon: float) -> np.ndarray:
    """Per graph, the smallest gap among the k+1 smallest Laplacian eigenvalues (float64): how
    well the k kept eigenvectors, and the boundary to the first dropped one, are defined."""
    laplacian = tgraph.normalized_laplacian(torch.from_numpy(A), epsilon).numpy()
    return np.diff(np.linalg.eigvalsh(laplacian)[..., : k + 1], axis=-1).min(axis=-1)


def random_adjacency(tiny, min_gap: float = 0.0, seed: int = 1) -> np.ndarray:
    """torchref's adjacency of random positive weights, float64 (2, L, N, N): B·L graphs drawn
    from a pool, keeping those whose laplacian_gaps exceed min_gap."""
    cfg = tiny.config.model
    batch, steps = 2, tiny.torch_taps["edge_weights"].shape[-1]
    weights = np.random.default_rng(seed).uniform(0.05, 1.0, (1, cfg.n_edges, 8 * batch * steps))
    pool = tgraph.adjacency(torch.from_numpy(weights), cfg.n_chans, cfg.graph.top_k, cfg.graph.edge_threshold)
    pool = pool.numpy()[0]  # (pool, N, N)
    gaps = laplacian_gaps(pool, cfg.graph.k_eigenvectors, cfg.graph.laplacian_epsilon)
    kept = pool[gaps > min_gap][: batch * steps]
    assert len(kept) == batch * steps, f"only {len(kept)} of {len(pool)} random graphs have gaps > {min_gap}"
    return kept.reshape(batch, steps, *kept.shape[1:])


def pe_args(tiny, sign: str) -> dict:
    g, st = tiny.config.model.graph, tiny.config.model.stability
    return dict(k=g.k_eigenvectors, sign=sign, gradient=st.pe_gradient, tau=st.eigh_tau,
                interval=g.semi_dynamic_interval, epsilon=g.laplacian_epsilon, guards=False)


def assert_pe_within_eigenvector_bounds(name, got, expected, A: np.ndarray, args: dict, dtype: str, sides: int):
    """Per graph and eigenvector column, |got − expected| within parity.tolerances'
    eigenvector_bounds of the Laplacian that was decomposed (Davis-Kahan: u·p(n)·‖L‖/gap): the
    layer tier's fixed 1e-5 ignores the gaps, and a float32 eigenvector at gap 0.05 already moves
    by ~2e-6 of a unit vector. The PE is computed every `interval` steps and held in between."""
    interval, k = args["interval"], args["k"]
    laplacians = tgraph.normalized_laplacian(torch.from_numpy(A[:, ::interval]), args["epsilon"]).numpy()
    bounds = eigenvector_bounds(laplacians, k, dtype, sides)  # (B, S, K)
    bounds = np.repeat(bounds, interval, axis=1)[:, : A.shape[1]]  # (B, L, K)
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    worst = (np.abs(got - expected) / bounds[:, :, None, :]).max()
    print(f"{name} {dtype}: max |Δ| {np.abs(got - expected).max():.3g}, at most {worst:.3g} of the "
          f"Davis-Kahan bound (smallest bound {bounds.min():.3g})")
    assert_within_bounds(name, got, expected, bounds[:, :, None, :])


@pytest.mark.parametrize("sign", ["max_abs", "sum"])
def test_laplacian_pe(tiny, dtype, sign):
    A = random_adjacency(tiny, min_gap=WELL_SEPARATED_GAP)  # (B, L, N, N)
    args = pe_args(tiny, sign)
    A_torch, A_jax = as_inputs(A, dtype)
    # 1. torch
    torch_out = tgraph.laplacian_pe(A_torch, **args)  # (B, L, N, K)
    # 2. jax
    jax_out = jax.jit(functools.partial(jgraph.laplacian_pe, **args))(A_jax)  # (B, L, N, K)
    # 3. compare
    print(compare_trees({f"pe[{sign}]": jax_out}, {f"pe[{sign}]": torch_out}, "layer", dtype).format())
    assert_pe_within_eigenvector_bounds(f"pe[{sign}]", jax_out, torch_out, A, args, dtype, sides=2)


def test_laplacian_pe_with_the_original_guards_on_a_non_finite_graph(tiny):
    """Under guards: original the condition number picks the shift; torch's raised on a graph holding
    NaN (LAPACK's SVD) where JAX's gives NaN, so a NaN reaching the graph crashed the torch trainer
    without its dump. Both twins now leave such a graph unshifted, and nan_to_num (the original's
    guard) zeroes its PE; the finite graphs are the twins' as without it."""
    A = random_adjacency(tiny, min_gap=WELL_SEPARATED_GAP)  # (B, L, N, N) float64
    args = {**pe_args(tiny, "max_abs"), "guards": True}
    clean = A.copy()
    A[0, : args["interval"], 2, 3] = A[0, : args["interval"], 3, 2] = np.nan  # the first PE step's graph
    torch_out = tgraph.laplacian_pe(torch.from_numpy(A), **args).numpy()  # float64: rounding decides nothing here
    with x64_enabled():
        jax_out = np.asarray(jax.jit(functools.partial(jgraph.laplacian_pe, **args))(jnp.asarray(A)))
    for out in (torch_out, jax_out):
        assert (out[0, : args["interval"]] == 0).all() and np.isfinite(out).all()
    # the other windows' graphs as without it, bit for bit: the same batch with window 0 finite, so
    # that LAPACK sees every other matrix where it was (MKL's eigh rounds a matrix by its place in
    # the batch: 19 x 19 float64 moved one place differed by up to 4.7e-14, a review measured)
    finite = tgraph.laplacian_pe(torch.from_numpy(clean), **args).numpy()
    np.testing.assert_array_equal(torch_out[1:], finite[1:])
    assert_pe_within_eigenvector_bounds("pe guards", jax_out[1:], torch_out[1:], A[1:], args, "float64", sides=2)


def test_laplacian_pe_at_small_gaps_float32_differs_by_rounding_only(tiny):
    """Any random graphs (gaps down to 3.6e-3 here): the float32 sides differ beyond the layer
    tier (1.8e-5 of max |pe| measured), yet each is within its rounding bound of float64
    (eigenvector_bounds, one side): neither drifted."""
    A = random_adjacency(tiny)  # (B, L, N, N) float64
    args = pe_args(tiny, "max_abs")
    print(f"smallest gap {laplacian_gaps(A, args['k'], args['epsilon']).min():.3g}")
    # 1. torch
    torch_32 = tgraph.laplacian_pe(torch.from_numpy(A.astype(np.float32)), **args)
    reference = tgraph.laplacian_pe(torch.from_numpy(A), **args)  # float64
    # 2. jax
    jax_32 = jax.jit(functools.partial(jgraph.laplacian_pe, **args))(jnp.asarray(A, jnp.float32))
    # 3. compare
    print(compare_trees({"pe": jax_32}, {"pe": torch_32}, "layer", "float32").format())
    print(f"float64 arbitration: {arbitrate(torch_32, jax_32, reference, 'layer')}")
    for side, value in (("torch", torch_32), ("jax", jax_32)):
        assert_pe_within_eigenvector_bounds(f"pe {side} vs float64", value, reference, A, args, "float32", sides=1)


# ----------------------------------------------------------------------------------------------
# GNN


def test_ssgconv(tiny, twin, forward, dtype):
    g, d, k = tiny.config.model.graph, tiny.config.model.electrode_dim, tiny.config.model.graph.k_eigenvectors
    torch_conv, jax_conv = twin(tgnn.SSGConv(d + k, d, g.alpha, g.hops, generator()),
                                lambda rngs: jgnn.SSGConv(d + k, d, g.alpha, g.hops, rngs=rngs), dtype)
    taps = tiny.torch_taps
    x = np.concatenate([taps["node_mamba"], taps["pe"]], axis=-1)  # (B, L, N, D + K), GraphMixer's first input
    x_torch, x_jax = as_inputs(rearrange(x, "b l n f -> (b l) n f"), dtype)  # (G, N, D + K)
    W_torch, W_jax = as_inputs(rearrange(taps["adjacency"], "b l n m -> (b l) n m"), dtype)  # (G, N, N)
    # 1. torch
    with torch.no_grad():
        torch_out = torch_conv(x_torch, W_torch)  # (G, N, D)
    # 2. jax
    jax_out = forward(jax_conv, x_jax, W_jax)  # (G, N, D)
    # 3. compare
    check("ssgconv", jax_out, torch_out, dtype)


def test_graph_mixer(tiny, twin, forward, dtype):
    cfg = tiny.config.model
    g, d = cfg.graph, cfg.electrode_dim
    torch_gnn, jax_gnn = twin(tgnn.GraphMixer(g, d, g.k_eigenvectors, cfg.layernorm_eps, generator()),
                              lambda rngs: jgnn.GraphMixer(g, d, g.k_eigenvectors, cfg.layernorm_eps, rngs=rngs),
                              dtype)
    inputs = [as_inputs(tiny.torch_taps[name], dtype) for name in ("node_mamba", "adjacency", "pe")]
    # 1. torch
    with torch.no_grad():
        torch_out = torch_gnn(*(t for t, _ in inputs))  # (B, L, N, D)
    # 2. jax
    jax_out = forward(jax_gnn, *(j for _, j in inputs))  # (B, L, N, D)
    # 3. compare
    check("gnn", jax_out, torch_out, dtype)
