"""torchref.gnn against torch_geometric's own SSGConv (the oracle)."""

import math

import pytest
import torch
from torch_geometric.nn import SSGConv as PygSSGConv
from torch_geometric.utils import dense_to_sparse

from common.config import GraphConfig
from parity.compare import compare_arrays
from torchref.gnn import GraphMixer, SSGConv

N_NODES = 19


def _weighted_graphs(n_graphs: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random sparse asymmetric W[g, src, dst] >= 0 with an isolated node and explicit loops."""
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(n_graphs, N_NODES, N_NODES, generator=g, dtype=torch.float64)
    W = W * (torch.rand(n_graphs, N_NODES, N_NODES, generator=g, dtype=torch.float64) < 0.3)
    W.diagonal(dim1=-2, dim2=-1).zero_()
    W[:, 4, :] = 0.0  # node 4: no edge at all (PyG still gives it a self-loop of weight 1)
    W[:, :, 4] = 0.0
    W[:, 2, 2] = 0.7  # explicit self-loops: PyG keeps their weight instead of adding 1
    W[:, 9, 9] = 2.5
    W[0, 11, :] = 0.0  # node 11 of graph 0: incoming edges only
    return W.to(dtype)


def _pyg_forward(pyg: PygSSGConv, x: torch.Tensor, W: torch.Tensor, edge_weight_leaf=None):
    """Run PyG on the block-diagonal batch of the dense graphs; returns (G, N, F_out)."""
    edge_index, edge_weight = dense_to_sparse(W)  # offsets g·N: one disjoint union graph
    if edge_weight_leaf is not None:
        edge_weight = edge_weight_leaf(edge_index)
    out = pyg(x.reshape(-1, x.shape[-1]), edge_index, edge_weight)  # (G·N, F_out)
    return out.reshape(x.shape[0], N_NODES, -1), edge_index


def _pair(in_features, out_features, alpha, hops, dtype):
    ours = SSGConv(
        in_features, out_features, alpha, hops, generator=torch.Generator().manual_seed(1)
    )
    pyg = PygSSGConv(in_features, out_features, alpha=alpha, K=hops)
    with torch.no_grad():
        pyg.lin.weight.copy_(ours.lin.weight)
        pyg.lin.bias.copy_(ours.lin.bias)
    return ours.to(dtype), pyg.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("alpha", "hops"), [(0.05, 2), (0.1, 3)])
def test_ssgconv_equals_pyg(dtype, alpha, hops):
    """Within the tolerance table's "layer" row (parity/tolerances.py): PyG scatters messages over
    edges where ours multiplies dense matrices, so float32 rounds each sum in its own order."""
    ours, pyg = _pair(12, 7, alpha, hops, dtype)
    W = _weighted_graphs(8, dtype)
    x = torch.randn(
        8, N_NODES, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    ).to(dtype)
    with torch.no_grad():
        expected, _ = _pyg_forward(pyg, x, W)
        got = ours(x, W)
    row = compare_arrays("ssgconv", got.numpy(), expected.numpy(), "layer", dtype)
    print(f"SSGConv vs PyG {dtype} alpha={alpha} K={hops}: max |diff| {row.max_abs:.2e}")
    assert row.passed, row.reason


def test_ssgconv_edge_weight_gradients_equal_pyg():
    ours, pyg = _pair(12, 7, 0.05, 2, torch.float64)
    W = _weighted_graphs(8, torch.float64).requires_grad_()
    x = torch.randn(8, N_NODES, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weights = torch.randn(
        8, N_NODES, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )

    leaf = {}

    def edge_weight_leaf(edge_index):
        graph, src = edge_index[0] // N_NODES, edge_index[0] % N_NODES
        leaf["w"] = W.detach()[graph, src, edge_index[1] % N_NODES].clone().requires_grad_()
        return leaf["w"]

    expected_out, edge_index = _pyg_forward(pyg, x, W.detach(), edge_weight_leaf)
    (expected_out * weights).sum().backward()
    (ours(x, W) * weights).sum().backward()

    graph, src, dst = edge_index[0] // N_NODES, edge_index[0] % N_NODES, edge_index[1] % N_NODES
    got = W.grad[graph, src, dst]  # only the edges PyG knows (explicit loops included)
    difference = (got - leaf["w"].grad).abs().max().item()
    print(f"SSGConv d/dW vs PyG float64: max |diff| {difference:.2e}")
    assert difference <= 1e-12 * max(1.0, leaf["w"].grad.abs().max().item())
    assert torch.isfinite(W.grad).all()  # isolated node included


def test_ssgconv_zero_in_degree_gradient_is_finite():
    # A negative in-degree is NaN in PyG; the safe where gives D^-1/2 = 0 and finite gradients.
    ours = SSGConv(3, 2, 0.05, 2, generator=torch.Generator().manual_seed(0)).double()
    W = torch.tensor([[-1.0, 0.5, 0.0], [0.0, 0.0, 0.2], [0.0, -2.0, 0.0]], dtype=torch.float64)
    W = W[None].clone().requires_grad_()
    out = ours(torch.ones(1, 3, 3, dtype=torch.float64), W)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(W.grad).all()


def test_ssgconv_init_is_pyg_uniform_and_seeded():
    a = SSGConv(80, 64, 0.05, 2, generator=torch.Generator().manual_seed(7))
    b = SSGConv(80, 64, 0.05, 2, generator=torch.Generator().manual_seed(7))
    bound = 1 / math.sqrt(80)
    assert torch.equal(a.lin.weight, b.lin.weight) and torch.equal(a.lin.bias, b.lin.bias)
    assert a.lin.weight.shape == (64, 80) and a.lin.bias.shape == (64,)
    for tensor in (a.lin.weight, a.lin.bias):
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.9 * bound


def _mixer(cfg, pe_dim, dtype=torch.float64):
    mixer = GraphMixer(
        cfg,
        d_model=6,
        pe_dim=pe_dim,
        layernorm_eps=1e-5,
        generator=torch.Generator().manual_seed(5),
    )
    with torch.no_grad():  # non-trivial norm parameters, so the order of ops matters
        for norm in mixer.norms:
            norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(6))
            norm.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(8))
    return mixer.to(dtype).eval()


@pytest.mark.parametrize("use_residual", [True, False])
def test_graph_mixer_equals_pyg_composition(use_residual):
    cfg = GraphConfig(n_layers=3, alpha=0.05, hops=2, use_residual=use_residual)
    mixer = _mixer(cfg, pe_dim=4)
    assert [layer.lin.in_features for layer in mixer.layers] == [10, 6, 6]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, N_NODES, 6, generator=g, dtype=torch.float64)  # (B, L, N, D)
    pe = torch.randn(2, 3, N_NODES, 4, generator=g, dtype=torch.float64)
    A = _weighted_graphs(6, torch.float64).reshape(2, 3, N_NODES, N_NODES)
    got = mixer(x, A, pe)  # (B, L, N, D)

    # the original's stack, layer by layer, with PyG's SSGConv on the block-diagonal batch
    h = torch.cat([x, pe], dim=-1).reshape(6, N_NODES, 10)
    for index, (layer, norm) in enumerate(zip(mixer.layers, mixer.norms, strict=True)):
        pyg = PygSSGConv(layer.lin.in_features, 6, alpha=0.05, K=2).double()
        pyg.lin.load_state_dict(layer.lin.state_dict())
        out, _ = _pyg_forward(pyg, h, A.reshape(6, N_NODES, N_NODES))
        h = norm(out + h if index > 0 and use_residual else out)
    expected = h.reshape(2, 3, N_NODES, 6)
    assert got.shape == (2, 3, N_NODES, 6)
    assert (got - expected).abs().max() <= 1e-12


def test_graph_mixer_without_pe_and_mismatch():
    cfg = GraphConfig(n_layers=2)
    x = torch.randn(1, 2, N_NODES, 6, dtype=torch.float64)
    A = _weighted_graphs(2, torch.float64).reshape(1, 2, N_NODES, N_NODES)
    assert _mixer(cfg, pe_dim=0)(x, A, None).shape == x.shape
    with pytest.raises(ValueError, match="pe_dim=4 but got no PE"):
        _mixer(cfg, pe_dim=4)(x, A, None)
