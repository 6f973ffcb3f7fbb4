"""Gradient parity: the original's focal loss (jaxbrr.train.loss / torchref.train.loss, the same
TrainConfig, labels and pos_weight) differentiated with respect to every parameter of the tiny
detector, eval mode (no dropout), float32 and float64, for `stability.pe_gradient` stop and safe;
in float32 with every edge kept, where a top-k near tie would be rounding's choice
(parity.tolerances.comparable_selection).

The NNX gradient State is put into torch's layout by parity/convert.py's own table (jax_to_torch
on a model whose Params hold the gradients), so each row is one torch state-dict name; no
transpose is written here. `full` (plain eigh backward) is checked on the Laplacian PE alone, on
graphs whose spectrum is well separated (at the model level it is NaN wherever eigenvalues repeat,
which is tested elsewhere).
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxbrr.graph as jgraph
import jaxbrr.train.loss as jloss
import torchref.graph as tgraph
import torchref.train.loss as tloss
from common.config import load_config
from common.train.class_weight import pos_weight_from_ratio
from parity.compare import compare_arrays, compare_trees
from parity.convert import jax_to_torch
from parity.tolerances import comparable_selection

TINY = "configs/tiny.yaml"
TRAIN = load_config(TINY).train  # focal, alpha 0.5, gamma 2
POS_WEIGHT = pos_weight_from_ratio(0.3421)  # the original's 1.3868; used since alpha = 0.5


@nnx.jit
def jax_loss_and_grads(model, x, labels):
    def loss_fn(model):
        logits, _ = model(x)
        return jloss.compute_loss(logits, labels, TRAIN, POS_WEIGHT)

    return nnx.value_and_grad(loss_fn)(model)  # (loss, State of the Params' gradients)


def in_torch_layout(pair, grads: nnx.State) -> dict[str, np.ndarray]:
    """The NNX gradients as torch state-dict arrays, through the conversion table."""
    carrier = nnx.clone(pair.jax_model)
    nnx.update(carrier, grads)
    scratch = copy.deepcopy(pair.torch_model)
    jax_to_torch(carrier, scratch)
    return {name: value.numpy() for name, value in scratch.state_dict().items()}


@pytest.mark.parametrize("pe_gradient", ["safe", "stop"])
def test_focal_loss_gradients_of_every_parameter(tiny, detector, dtype, pe_gradient):
    pair = detector(TINY, [f"model.stability.pe_gradient={pe_gradient}", *comparable_selection(dtype)], dtype=dtype)
    x, labels = tiny.x.astype(dtype), tiny.labels.astype(dtype)
    assert 0 < labels.mean() < 1  # both classes in the batch
    # 1. torch
    model = pair.torch_model
    model.zero_grad(set_to_none=True)
    logits, _ = model(torch.from_numpy(x))
    torch_loss = tloss.compute_loss(logits, torch.from_numpy(labels), TRAIN, POS_WEIGHT)
    torch_loss.backward()
    unreached = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unreached, f"the loss does not reach {unreached}"
    torch_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    # 2. jax
    jax_loss, grads = jax_loss_and_grads(pair.jax_model, jnp.asarray(x), jnp.asarray(labels))
    jax_grads = in_torch_layout(pair, grads)
    # 3. compare
    loss = compare_arrays("loss", jax_loss, torch_loss, "loss", dtype)
    report = compare_trees(jax_grads, torch_grads, "grad", dtype)
    print(f"loss {float(torch_loss.detach()):.6g}: max_abs {loss.max_abs:.3g}")
    print(report.format())
    worst = max(report.rows, key=lambda row: row.max_rel)
    print(f"largest max_rel: {worst.name} {worst.max_rel:.3g}")
    assert loss.passed, loss.reason
    assert report.passed, report.first_failure


# ----------------------------------------------------------------------------------------------
# the Laplacian PE alone: full (eigh's own backward) and safe (the masked VJP) on separated spectra

SEPARATED_GAP = 0.02  # every eigenvalue gap of every graph; the backward divides by each of them


def separated_adjacency(n_graphs: int, n_nodes: int, top_k: int, epsilon: float, seed: int = 0) -> np.ndarray:
    """(1, n_graphs, N, N) float64: adjacency of random positive edge weights (no ties), kept
    only when all gaps of the Laplacian spectrum exceed SEPARATED_GAP."""
    n_edges = n_nodes * (n_nodes - 1) // 2
    weights = np.random.default_rng(seed).uniform(0.05, 1.0, (1, n_edges, 64 * n_graphs))
    pool = tgraph.adjacency(torch.from_numpy(weights), n_nodes, top_k, 1e-4)[0]  # (pool, N, N)
    eigenvalues = np.linalg.eigvalsh(tgraph.normalized_laplacian(pool, epsilon).numpy())
    kept = pool.numpy()[np.diff(eigenvalues, axis=-1).min(axis=-1) > SEPARATED_GAP][:n_graphs]
    assert len(kept) == n_graphs, f"{len(kept)} of {len(pool)} random graphs are separated by {SEPARATED_GAP}"
    return kept[None]


@pytest.mark.parametrize("pe_gradient", ["full", "safe"])
def test_laplacian_pe_gradient_on_a_separated_spectrum(tiny, dtype, pe_gradient):
    g, st, n = tiny.config.model.graph, tiny.config.model.stability, tiny.config.model.n_chans
    A = separated_adjacency(8, n, g.top_k, g.laplacian_epsilon).astype(dtype)  # (1, L, N, N)
    weights = np.random.default_rng(1).standard_normal((*A.shape[:-1], g.k_eigenvectors)).astype(dtype)
    args = dict(k=g.k_eigenvectors, sign=g.pe_sign, gradient=pe_gradient, tau=st.eigh_tau, interval=1,
                epsilon=g.laplacian_epsilon, guards=False)
    # 1. torch
    A_torch = torch.from_numpy(A).requires_grad_()
    (tgraph.laplacian_pe(A_torch, **args) * torch.from_numpy(weights)).sum().backward()
    # 2. jax
    pe = functools.partial(jgraph.laplacian_pe, **args)
    jax_grad = jax.jit(jax.grad(lambda A: (pe(A) * weights).sum()))(jnp.asarray(A))
    # 3. compare
    report = compare_trees({"dL/dA": jax_grad}, {"dL/dA": A_torch.grad}, "grad", dtype)
    print(report.format())
    assert report.passed, report.first_failure
