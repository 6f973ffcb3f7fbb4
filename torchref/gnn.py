"""The GNN of the V3 detector: dense batched SSGConv and the GraphMixer stack.

Glossary: B batch, L steps, N nodes (electrodes), D model width, K eigenvectors (PE width),
G = B·L graphs processed in one batched call, F feature width of a layer.

`jaxbrr/gnn.py` holds the same classes in the same order with the same attribute names.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from common.config import GraphConfig
from torchref.graph import safe_rsqrt


class SSGConv(nn.Module):
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
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.alpha = alpha
        self.hops = hops
        # skip_init: no draw from the global RNG; all randomness comes from `generator`.
        self.lin = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=True)
        # torch_geometric Linear: weight kaiming_uniform(fan=in, a=√5) = U(±1/√in), bias U(±1/√in).
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.lin.weight, -bound, bound, generator=generator)
        nn.init.uniform_(self.lin.bias, -bound, bound, generator=generator)

    def propagation(self, W: torch.Tensor) -> torch.Tensor:
        """Normalised propagation matrix P: (G, N, N) -> (G, N, N), out = P @ x."""
        n_nodes = W.shape[-1]
        eye = torch.eye(n_nodes, dtype=torch.bool, device=W.device)
        diagonal = torch.diagonal(W, dim1=-2, dim2=-1)  # (G, N)
        loops = torch.where(diagonal != 0, diagonal, 1.0)  # (G, N)
        with_loops = torch.where(eye, 0.0, W) + torch.diag_embed(loops)  # (G, N, N)
        inverse_sqrt = safe_rsqrt(with_loops.sum(dim=-2))  # (G, N) in-degree^-1/2
        normalised = inverse_sqrt[..., :, None] * with_loops * inverse_sqrt[..., None, :]
        return normalised.transpose(-1, -2)  # (G, N, N) [dst, src]

    def forward(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """x (G, N, F_in), W (G, N, N) weighted adjacency [src, dst] -> (G, N, F_out)."""
        P = self.propagation(W)
        h = x * self.alpha
        for _ in range(self.hops):
            x = P @ x  # (G, N, F_in)
            h = h + (1 - self.alpha) / self.hops * x
        return self.lin(h)  # (G, N, F_out)


class GraphMixer(nn.Module):
    """The original's vectorised GNN (original_spec.md §2), no nonlinearity:

    [x ‖ pe] → SSGConv → LayerNorm → dropout → SSGConv (+ residual) → LayerNorm → dropout ...

    Every (sample, step) graph is one of G = B·L graphs of a single batched call. The residual
    (graph.use_residual) is added before the norm, from the second layer on (the first changes
    the width from D + K to D).
    """

    def __init__(
        self,
        cfg: GraphConfig,
        d_model: int,
        pe_dim: int,
        layernorm_eps: float,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.pe_dim = pe_dim
        self.use_residual = cfg.use_residual
        widths = [d_model + pe_dim] + [d_model] * (cfg.n_layers - 1)
        self.layers = nn.ModuleList(
            SSGConv(width, d_model, cfg.alpha, cfg.hops, generator=generator) for width in widths
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(d_model, eps=layernorm_eps) for _ in range(cfg.n_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, A: torch.Tensor, pe: torch.Tensor | None) -> torch.Tensor:
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
            h = torch.cat([h, rearrange(pe, "b l n k -> (b l) n k")], dim=-1)  # (G, N, D + K)
        for index, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            out = layer(h, W)  # (G, N, D)
            if index > 0 and self.use_residual:
                out = out + h
            h = self.dropout(norm(out))
        return rearrange(h, "(b l) n d -> b l n d", b=batch)  # (B, L, N, D)
