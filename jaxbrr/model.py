"""SeizureDetector, the V3 dual-stream model (Flax NNX twin of torchref/model.py): x -> (logits, taps).

Glossary: B batch, C = N input channels (19 electrodes for ref19), T samples, L = T / stride_down
steps, D_tcn encoder width, D electrode feature width, E = N(N-1)/2 edges, K PE eigenvectors,
F edge feature width (edge_lift).

    x (B, C, T) ─ TCNEncoder ─ (B, L, D_tcn) ─ proj_to_electrodes ─ (B, N, L, D)
      ├─ node stream: node_mamba over (B·N, L, D)
      └─ edge stream: edge_features (B, E, L) ─ edge_lift ─ edge_mamba over (B·E, L, F) ─ edge_proj ─ softplus
    adjacency (B, L, N, N) ─ Laplacian PE (B, L, N, K) ─ gnn (SSGConv ×n) ─ proj_from_electrodes ─ head ─ (B, T)

The public layout is (B, C, T) as torchref's; inside, the convolutions run channels-last. `taps`
carries the same names as torchref's, in the same (torch) layout, so the parity harness compares
them as they are; under jit, taps that nothing uses are dropped by XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxbrr import graph
from jaxbrr.config import ModelConfig
from jaxbrr.gnn import GraphMixer
from jaxbrr.mamba import BiMamba2
from jaxbrr.tcn import ProjectionHead, TCNEncoder, pointwise_conv

# The static PE is a constant of (montage, k, sign): numpy, computed once outside jit.
_static_pe = functools.lru_cache(maxsize=None)(graph.static_pe)

# Initialisation gains of the original's electrode projections and edge lift (as torchref).
TO_ELECTRODES_GAIN = 0.1
FROM_ELECTRODES_GAIN = 0.05
EDGE_LIFT_GAIN = 0.1


class SeizureDetector(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        guards = config.stability.guards == "original"
        # precision bfloat16: convolutions, projections and Mamba matmuls compute in bf16 on float32
        # parameters; the scan's dt/A/cumsums/decays, the gated norm's statistics, the graph and
        # the eigh PE stay float32 (jaxbrr/ssm.py, mamba.py, graph.py), and logits return as float32.
        dtype = jnp.bfloat16 if config.precision == "bfloat16" else None
        n, d, d_tcn = config.n_chans, config.electrode_dim, config.tcn.out_channels
        self.tcn = TCNEncoder(n, config.tcn, rngs=rngs, dtype=dtype)
        if config.architecture == "v3":
            self.proj_to_electrodes = pointwise_conv(d_tcn, n * d, TO_ELECTRODES_GAIN, rngs=rngs, dtype=dtype)
            self.node_mamba = BiMamba2(config.node_mamba, config.ssm, guards, config.layernorm_eps,
                                       remat=config.remat, rngs=rngs, dtype=dtype)
            if config.graph.enabled:
                g = config.graph
                self.edge_lift = pointwise_conv(1, g.edge_lift, EDGE_LIFT_GAIN, rngs=rngs, bias=False)
                self.edge_mamba = BiMamba2(g.edge_mamba, config.ssm, guards, config.layernorm_eps,
                                           remat=config.remat, rngs=rngs, dtype=dtype)
                self.edge_proj = pointwise_conv(g.edge_lift, 1, 1.0, rngs=rngs)
                self.gnn = GraphMixer(g, d, g.k_eigenvectors, config.layernorm_eps, rngs=rngs)
                if not g.use_dynamic_pe:  # computed here, outside any trace; fails early for bipolar
                    _static_pe(config.montage, g.k_eigenvectors, g.pe_sign)
            self.proj_from_electrodes = pointwise_conv(n * d, d_tcn, FROM_ELECTRODES_GAIN, rngs=rngs, dtype=dtype)
        elif config.architecture == "v2":
            self.mamba = BiMamba2(config.v2_mamba, config.ssm, guards, config.layernorm_eps,
                                  remat=config.remat, rngs=rngs, dtype=dtype)
        self.head = ProjectionHead(d_tcn, n, config.tcn.stride_down, guards, rngs=rngs, dtype=dtype)
        self.dtype = dtype

    @property
    def guards(self) -> bool:
        return self.config.stability.guards == "original"

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        taps: dict[str, jax.Array] = {}
        if self.guards:  # original: nan_to_num (NaN and ±inf -> 0) + clamp ±10 on the input
            x = jnp.clip(jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -10, 10)
        taps["input"] = x  # (B, C, T)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        h = self.tcn(rearrange(x, "b c t -> b t c"))  # (B, L, D_tcn)
        taps["tcn"] = rearrange(h, "b l d -> b d l")
        if self.config.architecture == "v3":
            h = self._v3(h, taps)  # (B, L, D_tcn)
        elif self.config.architecture == "v2":
            h = self.mamba(h)  # (B, L, D_tcn)
            taps["mamba"] = rearrange(h, "b l d -> b d l")
        logits = taps["logits"] = self.head(h).astype(jnp.promote_types(taps["input"].dtype, jnp.float32))  # (B, T)
        return logits, taps

    def _v3(self, h: jax.Array, taps: dict) -> jax.Array:
        cfg, n = self.config, self.config.n_chans
        e = rearrange(self.proj_to_electrodes(h), "b l (n d) -> b n l d", n=n)  # (B, N, L, D)
        taps["electrodes"] = e
        z = self.node_mamba(rearrange(e, "b n l d -> (b n) l d"))  # (B·N, L, D)
        z = taps["node_mamba"] = rearrange(z, "(b n) l d -> b l n d", n=n)  # (B, L, N, D)
        if cfg.graph.enabled:
            g = cfg.graph
            s = taps["edge_features"] = graph.edge_features(e, g.edge_features, self.guards)  # (B, E, L)
            f = self.edge_lift(rearrange(s, "b e l -> (b e) l 1"))  # (B·E, L, F)
            if self.guards:  # original: clamp ±3 after the lift
                f = jnp.clip(f, -3, 3)
            f = self.edge_mamba(f)  # (B·E, L, F)
            w = jax.nn.softplus(self.edge_proj(f))  # (B·E, L, 1)
            w = taps["edge_weights"] = rearrange(w, "(b e) l 1 -> b e l", b=e.shape[0])  # (B, E, L)
            a = taps["adjacency"] = graph.adjacency(w, n, g.top_k, g.edge_threshold)  # (B, L, N, N)
            if g.use_dynamic_pe:
                pe = graph.laplacian_pe(
                    a, g.k_eigenvectors, g.pe_sign, cfg.stability.pe_gradient, cfg.stability.eigh_tau,
                    g.semi_dynamic_interval, g.laplacian_epsilon, self.guards,
                )  # (B, L, N, K)
            else:
                static = jnp.asarray(_static_pe(cfg.montage, g.k_eigenvectors, g.pe_sign), a.dtype)
                pe = jnp.broadcast_to(static, (*a.shape[:2], *static.shape))  # (B, L, N, K)
            taps["pe"] = pe
            z = taps["gnn"] = self.gnn(z, a, pe)  # (B, L, N, D)
        z = rearrange(z, "b l n d -> b l (n d)")  # (B, L, N·D)
        h = self.proj_from_electrodes(z)  # (B, L, D_tcn)
        taps["from_electrodes"] = rearrange(h, "b l d -> b d l")
        return h


def count_parameters(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
