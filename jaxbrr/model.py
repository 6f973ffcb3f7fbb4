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
from collections.abc import Callable

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from common.config import ModelConfig
from common.constants import (
    EDGE_LIFT_GAIN,
    FROM_ELECTRODES_GAIN,
    GUARD_EDGE_LIFT,
    GUARD_MODEL_INPUT,
    TO_ELECTRODES_GAIN,
)
from common.stages import FLOAT32_STAGES, run_stages
from jaxbrr import graph
from jaxbrr.gnn import GraphMixer
from jaxbrr.mamba import BiMamba2, softplus
from jaxbrr.ssm import at_least_float32
from jaxbrr.tcn import ProjectionHead, TCNEncoder, pointwise_conv

# The static PE is a constant of (montage, k, sign): numpy, computed once outside jit.
_static_pe = functools.lru_cache(maxsize=None)(graph.static_pe)



class SeizureDetector(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        guards = config.stability.guards == "original"
        # precision bfloat16: convolutions (the edge lift and projection too, as under torch's
        # autocast), projections and Mamba matmuls compute in bf16 on float32 parameters; the scan's
        # dt/A/cumsums/decays and the gated norm's statistics stay float32 (jaxbrr/ssm.py, mamba.py),
        # so do common.stages.FLOAT32_STAGES (similarities, graph, eigh PE, GNN: their inputs are
        # upcast, as torchref's), and logits return as float32.
        dtype = jnp.bfloat16 if config.precision == "bfloat16" else None
        n, d, d_tcn = config.n_chans, config.electrode_dim, config.tcn.out_channels
        self.tcn = TCNEncoder(n, config.tcn, rngs=rngs, dtype=dtype)
        if config.architecture == "v3":
            self.proj_to_electrodes = pointwise_conv(d_tcn, n * d, TO_ELECTRODES_GAIN, rngs=rngs, dtype=dtype)
            self.node_mamba = BiMamba2(config.node_mamba, config.ssm, guards, config.layernorm_eps,
                                       remat=config.remat, rngs=rngs, dtype=dtype)
            if config.graph.enabled:
                g = config.graph
                self.edge_lift = pointwise_conv(1, g.edge_lift, EDGE_LIFT_GAIN, rngs=rngs, bias=False, dtype=dtype)
                self.edge_mamba = BiMamba2(g.edge_mamba, config.ssm, guards, config.layernorm_eps,
                                           remat=config.remat, rngs=rngs, dtype=dtype)
                self.edge_proj = pointwise_conv(g.edge_lift, 1, 1.0, rngs=rngs, dtype=dtype)
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
        values = run_stages(self.stages(), self.config.stage_inputs, x)
        return values["logits"], values

    def stages(self) -> dict[str, Callable[..., jax.Array]]:
        """tap name -> the function computing it from its inputs, in forward order, for the stages
        common/stages.py's table gives this config; every array in torchref's tap layout (the
        rearranges between stages cancel under jit). __call__ is these, run in order."""
        stages = {}
        for name in self.config.stage_inputs:
            stage = getattr(self, f"_{name}")
            if self.dtype is not None and name in FLOAT32_STAGES:
                stage = _upcast_inputs(stage)
            stages[name] = _named(name, stage)
        return stages

    def _input(self, x: jax.Array) -> jax.Array:  # (B, C, T)
        if self.guards:  # original: nan_to_num (NaN and ±inf -> 0) + clamp ±10 on the input
            x = jnp.clip(jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -GUARD_MODEL_INPUT, GUARD_MODEL_INPUT)
        return x

    def _tcn(self, x: jax.Array) -> jax.Array:  # (B, C, T) -> (B, D_tcn, L)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return rearrange(self.tcn(rearrange(x, "b c t -> b t c")), "b l d -> b d l")

    def _mamba(self, h: jax.Array) -> jax.Array:  # (B, D_tcn, L) -> (B, D_tcn, L)
        return rearrange(self.mamba(rearrange(h, "b d l -> b l d")), "b l d -> b d l")

    def _electrodes(self, h: jax.Array) -> jax.Array:  # (B, D_tcn, L) -> (B, N, L, D)
        e = self.proj_to_electrodes(rearrange(h, "b d l -> b l d"))  # (B, L, N·D)
        return rearrange(e, "b l (n d) -> b n l d", n=self.config.n_chans)

    def _node_mamba(self, e: jax.Array) -> jax.Array:  # (B, N, L, D) -> (B, L, N, D)
        z = self.node_mamba(rearrange(e, "b n l d -> (b n) l d"))  # (B·N, L, D)
        return rearrange(z, "(b n) l d -> b l n d", n=self.config.n_chans)

    def _edge_features(self, e: jax.Array) -> jax.Array:  # (B, N, L, D) -> (B, E, L)
        return graph.edge_features(e, self.config.graph.edge_features, self.guards)

    def _edge_weights(self, s: jax.Array) -> jax.Array:  # (B, E, L) -> (B, E, L)
        f = self.edge_lift(rearrange(s, "b e l -> (b e) l 1"))  # (B·E, L, F)
        if self.guards:  # original: clamp ±3 after the lift
            f = jnp.clip(f, -GUARD_EDGE_LIFT, GUARD_EDGE_LIFT)
        f = self.edge_mamba(f)  # (B·E, L, F)
        # softplus in float32 at least, as torch's CUDA autocast runs it (torchref on every device); torch's
        # threshold. Returned in the parameters' dtype, as torchref's: float32 under model.precision
        # bfloat16, the model's own when all of it is cast (the localiser's half-precision runs)
        w = softplus(at_least_float32(self.edge_proj(f))).astype(self.edge_proj.kernel.dtype)  # (B·E, L, 1)
        return rearrange(w, "(b e) l 1 -> b e l", b=s.shape[0])

    def _adjacency(self, w: jax.Array) -> jax.Array:  # (B, E, L) -> (B, L, N, N)
        g = self.config.graph
        return graph.adjacency(w, self.config.n_chans, g.top_k, g.edge_threshold)

    def _pe(self, a: jax.Array) -> jax.Array:  # (B, L, N, N) -> (B, L, N, K)
        g, stability = self.config.graph, self.config.stability
        if not g.use_dynamic_pe:
            static = jnp.asarray(_static_pe(self.config.montage, g.k_eigenvectors, g.pe_sign), a.dtype)
            return jnp.broadcast_to(static, (*a.shape[:2], *static.shape))
        return graph.laplacian_pe(a, g.k_eigenvectors, g.pe_sign, stability.pe_gradient, stability.eigh_tau,
                                  g.semi_dynamic_interval, g.laplacian_epsilon, self.guards, g.eigh_calls)

    def _gnn(self, z: jax.Array, a: jax.Array, pe: jax.Array) -> jax.Array:  # -> (B, L, N, D)
        return self.gnn(z, a, pe)

    def _from_electrodes(self, z: jax.Array) -> jax.Array:  # (B, L, N, D) -> (B, D_tcn, L)
        h = self.proj_from_electrodes(rearrange(z, "b l n d -> b l (n d)"))  # (B, L, D_tcn)
        return rearrange(h, "b l d -> b d l")

    def _logits(self, h: jax.Array) -> jax.Array:  # (B, D_tcn, L) -> (B, T), at least float32
        return self.head(rearrange(h, "b d l -> b l d")).astype(jnp.promote_types(h.dtype, jnp.float32))


def count_parameters(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _upcast_inputs(stage: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The stage on its inputs in at least float32 (a FLOAT32_STAGES stage under bf16 precision)."""

    @functools.wraps(stage)
    def upcast(*args):
        return stage(*(at_least_float32(a) for a in args))

    return upcast


def _named(name: str, stage: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The stage under jax.named_scope(name): its ops carry the tap's name in their HLO metadata
    (op_name), forward and backward, so a profile attributes device time to stages
    (benchmarks/step_profile.py). Metadata only: the computation is unchanged."""

    @functools.wraps(stage)
    def scoped(*args):
        with jax.named_scope(name):
            return stage(*args)

    return scoped
