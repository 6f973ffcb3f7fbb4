"""The GNN of the V3 detector: dense batched SSGConv and the GraphMixer stack.

Glossary: B batch, L steps, N nodes (electrodes), D model width, K eigenvectors (PE width),
G = B·L graphs processed in one batched call, F feature width of a layer.

`torchref/gnn.py` holds the same classes in the same order with the same attribute names
(torch `layers.0.lin.weight` ↔ NNX `layers / 0 / lin / kernel`, transposed).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from common.config import GraphConfig
from jaxbrr.graph import safe_rsqrt
from jaxbrr.init import uniform


class SSGConv(nnx.Module):
    """Simple Spectral Graph Convolution (Zhu & Koniusz, ICLR 2021), dense and batched.

    out = lin(α·x + (1 − α)/K · Σ_{k=1..K} Pᵏ x), with P the GCN-normalised adjacency exactly as
    torch_geometric's `nn/conv/ssg_conv.py` + `gcn_norm` (`nn/conv/gcn_conv.py`) build it
    (ssm_gnn_anchors.md §4.1):
      - add_remaining_self_loops: a nonzero diagonal entry is kept as the loop weight, a zero one
        becomes 1 (so a learned diagonal of 1.0 is the loop, not loop + 1);
      - degree = in-degree, the column sums of W[src, dst] (loops included);
      - D^-1/2 = 0 for degree <= 0, by the gradient-safe where (PyG's pow(-0.5) + masked_fill
        gives NaN gradients; a negative degree gives NaN in PyG, 0 here);
      - P = (D^-1/2 Â D^-1/2)ᵀ, so that (P x)_dst = Σ_src w_src,dst x_src.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        alpha: float,
        hops: int,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
    ):
        self.alpha = alpha
        self.hops = hops
        # torch_geometric Linear: weight kaiming_uniform(fan=in, a=√5) = U(±1/√in), bias U(±1/√in).
        bound = 1.0 / math.sqrt(in_features)
        self.lin = nnx.Linear(
            in_features,
            out_features,
            use_bias=True,
            kernel_init=uniform(bound),
            bias_init=uniform(bound),
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def propagation(self, W: jax.Array) -> jax.Array:
        """Normalised propagation matrix P: (G, N, N) -> (G, N, N), out = P @ x."""
        n_nodes = W.shape[-1]
        eye = jnp.eye(n_nodes, dtype=bool)
        diagonal = jnp.diagonal(W, axis1=-2, axis2=-1)  # (G, N)
        loops = jnp.where(diagonal != 0, diagonal, 1.0)  # (G, N)
        with_loops = jnp.where(eye, loops[..., :, None], W)  # (G, N, N) diagonal := loops
        inverse_sqrt = safe_rsqrt(with_loops.sum(axis=-2))  # (G, N) in-degree^-1/2
        normalised = inverse_sqrt[..., :, None] * with_loops * inverse_sqrt[..., None, :]
        return jnp.swapaxes(normalised, -1, -2)  # (G, N, N) [dst, src]

    def __call__(self, x: jax.Array, W: jax.Array) -> jax.Array:
        """x (G, N, F_in), W (G, N, N) weighted adjacency [src, dst] -> (G, N, F_out)."""
        P = self.propagation(W)
        h = x * self.alpha
        for _ in range(self.hops):
            x = P @ x  # (G, N, F_in)
            h = h + (1 - self.alpha) / self.hops * x
        return self.lin(h)  # (G, N, F_out)


class GraphMixer(nnx.Module):
    """The original's vectorised GNN (original_spec.md §2), no nonlinearity:

    [x ‖ pe] → SSGConv → LayerNorm → dropout → SSGConv (+ residual) → LayerNorm → dropout ...

    Every (sample, step) graph is one of G = B·L graphs of a single batched call. The residual
    (graph.use_residual) is added before the norm, from the second layer on (the first changes
    the width from D + K to D). LayerNorm uses torch's two-pass variance
    (use_fast_variance=False; the fast one is wrong on offset inputs, parity_nan_anchors.md §4.7)
    and the configured epsilon, not Flax's 1e-6 default.
    """

    def __init__(
        self,
        cfg: GraphConfig,
        d_model: int,
        pe_dim: int,
        layernorm_eps: float,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
    ):
        self.pe_dim = pe_dim
        self.use_residual = cfg.use_residual
        widths = [d_model + pe_dim] + [d_model] * (cfg.n_layers - 1)
        self.layers = nnx.List(
            SSGConv(width, d_model, cfg.alpha, cfg.hops, rngs=rngs, param_dtype=param_dtype)
            for width in widths
        )
        self.norms = nnx.List(
            nnx.LayerNorm(
                d_model,
                epsilon=layernorm_eps,
                use_fast_variance=False,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            for _ in range(cfg.n_layers)
        )
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, A: jax.Array, pe: jax.Array | None) -> jax.Array:
        """x (B, L, N, D), A (B, L, N, N), pe (B, L, N, K) or None -> (B, L, N, D)."""
        if (pe is None) != (self.pe_dim == 0):
            raise ValueError(
                f"GraphMixer was built with pe_dim={self.pe_dim} but got "
                f"{'no PE' if pe is None else f'a PE of width {pe.shape[-1]}'}"
            )
        batch = x.shape[0]
        h = rearrange(x, "b l n d -> (b l) n d")  # (G, N, D)
        W = rearrange(A, "b l n m -> (b l) n m")  # (G, N, N)
        if pe is not None:
            pe = rearrange(pe, "b l n k -> (b l) n k")  # (G, N, K)
            h = jnp.concatenate([h, pe], axis=-1)  # (G, N, D + K)
        for index, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            out = layer(h, W)  # (G, N, D)
            if index > 0 and self.use_residual:
                out = out + h
            h = self.dropout(norm(out))
        return rearrange(h, "(b l) n d -> b l n d", b=batch)  # (B, L, N, D)
