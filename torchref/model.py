"""SeizureDetector, the V3 dual-stream model (PyTorch reference): x -> (logits, taps).

Glossary: B batch, C = N input channels (19 electrodes for ref19), T samples, L = T / stride_down
steps, D_tcn encoder width, D electrode feature width, E = N(N-1)/2 edges, K PE eigenvectors,
F edge feature width (edge_lift).

    x (B, C, T) ─ TCNEncoder ─ (B, D_tcn, L) ─ proj_to_electrodes ─ (B, N, L, D)
      ├─ node stream: node_mamba over (B·N, L, D)
      └─ edge stream: edge_features (B, E, L) ─ edge_lift ─ edge_mamba over (B·E, L, F) ─ edge_proj ─ softplus
    adjacency (B, L, N, N) ─ Laplacian PE (B, L, N, K) ─ gnn (SSGConv ×n) ─ proj_from_electrodes ─ head ─ (B, T)

`taps` is an ordered dict of named intermediates in forward order; jaxbrr returns the same names,
and the parity harness and the NaN localiser compare them one by one. `architecture: v2` is
TCN → 512-wide BiMamba-2 → head, `tcn` is TCN → head; `graph.enabled: false` sends the node
stream straight to the back projection (no edge stream is built: no dead modules).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from common.config import ModelConfig
from common.constants import (
    EDGE_LIFT_GAIN,
    FROM_ELECTRODES_GAIN,
    GUARD_EDGE_LIFT,
    GUARD_MODEL_INPUT,
    TO_ELECTRODES_GAIN,
)
from common.stages import FLOAT32_STAGES, run_stages
from torchref import graph
from torchref.gnn import GraphMixer
from torchref.mamba import BiMamba2
from torchref.ssm import at_least_float32
from torchref.tcn import ProjectionHead, TCNEncoder, pointwise_conv

# model.precision bfloat16, as jaxbrr/model.py: convolutions, projections and Mamba matmuls run in
# bf16 (autocast) on float32 parameters; common.stages.FLOAT32_STAGES and the returned logits stay
# float32, and so does the selective scan inside the Mamba stages (torchref/ssm.py).


class SeizureDetector(nn.Module):
    def __init__(self, config: ModelConfig, generator: torch.Generator | int | None = None):
        super().__init__()
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        self.config = config
        guards = config.stability.guards == "original"
        n, d, d_tcn = config.n_chans, config.electrode_dim, config.tcn.out_channels
        self.tcn = TCNEncoder(n, config.tcn, generator)
        if config.architecture == "v3":
            self.proj_to_electrodes = pointwise_conv(d_tcn, n * d, TO_ELECTRODES_GAIN, generator)
            self.node_mamba = BiMamba2(config.node_mamba, config.ssm, guards, config.layernorm_eps, generator,
                                       remat=config.remat)
            if config.graph.enabled:
                g = config.graph
                self.edge_lift = pointwise_conv(1, g.edge_lift, EDGE_LIFT_GAIN, generator, bias=False)
                self.edge_mamba = BiMamba2(g.edge_mamba, config.ssm, guards, config.layernorm_eps, generator,
                                           remat=config.remat)
                self.edge_proj = pointwise_conv(g.edge_lift, 1, 1.0, generator)
                self.gnn = GraphMixer(g, d, g.k_eigenvectors, config.layernorm_eps, generator)
                if not g.use_dynamic_pe:
                    pe = graph.static_pe(config.montage, g.k_eigenvectors, g.pe_sign)
                    self.register_buffer("static_pe", pe, persistent=False)
            self.proj_from_electrodes = pointwise_conv(n * d, d_tcn, FROM_ELECTRODES_GAIN, generator)
        elif config.architecture == "v2":
            self.mamba = BiMamba2(config.v2_mamba, config.ssm, guards, config.layernorm_eps, generator,
                                  remat=config.remat)
        self.head = ProjectionHead(d_tcn, n, config.tcn.stride_down, guards, generator)

    @property
    def guards(self) -> bool:
        return self.config.stability.guards == "original"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict]:
        values = run_stages(self.stages(), self.config.stage_inputs, x)
        return values["logits"], OrderedDict(values)

    def stages(self) -> OrderedDict[str, Callable[..., torch.Tensor]]:
        """tap name -> the function computing it from its inputs, in forward order, for the stages
        common/stages.py's table gives this config; every tensor in the (torch) tap layout.
        forward() is these, run in order."""
        stages = OrderedDict((name, getattr(self, f"_{name}")) for name in self.config.stage_inputs)
        if self.config.precision == "bfloat16":
            stages = OrderedDict((name, _in_bfloat16(name, fn)) for name, fn in stages.items())
        return stages

    def _input(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        if self.guards:  # original: nan_to_num (NaN and ±inf -> 0) + clamp ±10 on the input
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(-GUARD_MODEL_INPUT, GUARD_MODEL_INPUT)
        return x

    def _tcn(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, D_tcn, L)
        return self.tcn(x)

    def _mamba(self, h: torch.Tensor) -> torch.Tensor:  # (B, D_tcn, L) -> (B, D_tcn, L)
        return rearrange(self.mamba(rearrange(h, "b d l -> b l d")), "b l d -> b d l")

    def _electrodes(self, h: torch.Tensor) -> torch.Tensor:  # (B, D_tcn, L) -> (B, N, L, D)
        return rearrange(self.proj_to_electrodes(h), "b (n d) l -> b n l d", n=self.config.n_chans)

    def _node_mamba(self, e: torch.Tensor) -> torch.Tensor:  # (B, N, L, D) -> (B, L, N, D)
        z = self.node_mamba(rearrange(e, "b n l d -> (b n) l d"))  # (B·N, L, D)
        return rearrange(z, "(b n) l d -> b l n d", n=self.config.n_chans)

    def _edge_features(self, e: torch.Tensor) -> torch.Tensor:  # (B, N, L, D) -> (B, E, L)
        return graph.edge_features(e, self.config.graph.edge_features, self.guards)

    def _edge_weights(self, s: torch.Tensor) -> torch.Tensor:  # (B, E, L) -> (B, E, L)
        f = self.edge_lift(rearrange(s, "b e l -> (b e) 1 l"))  # (B·E, F, L)
        if self.guards:  # original: clamp ±3 after the lift
            f = f.clamp(-GUARD_EDGE_LIFT, GUARD_EDGE_LIFT)
        f = self.edge_mamba(rearrange(f, "be f l -> be l f"))  # (B·E, L, F)
        # softplus in float32 at least: CUDA autocast runs it so, CPU autocast would not (bf16 precision);
        # returned in the parameters' dtype: float32 under autocast, the model's own when all of it is
        # cast (the localiser's bfloat16/float16 runs: the GNN's weights are then in that dtype too)
        p = self.edge_proj(rearrange(f, "be l f -> be f l"))  # (B·E, 1, L)
        w = F.softplus(at_least_float32(p)).to(self.edge_proj.weight.dtype)  # (B·E, 1, L)
        return rearrange(w, "(b e) 1 l -> b e l", b=s.shape[0])

    def _adjacency(self, w: torch.Tensor) -> torch.Tensor:  # (B, E, L) -> (B, L, N, N)
        g = self.config.graph
        return graph.adjacency(w, self.config.n_chans, g.top_k, g.edge_threshold)

    def _pe(self, a: torch.Tensor) -> torch.Tensor:  # (B, L, N, N) -> (B, L, N, K)
        g, stability = self.config.graph, self.config.stability
        if not g.use_dynamic_pe:
            return self.static_pe.to(a.dtype).expand(*a.shape[:2], -1, -1)
        return graph.laplacian_pe(a, g.k_eigenvectors, g.pe_sign, stability.pe_gradient, stability.eigh_tau,
                                  g.semi_dynamic_interval, g.laplacian_epsilon, self.guards)

    def _gnn(self, z: torch.Tensor, a: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:  # -> (B, L, N, D)
        return self.gnn(z, a, pe)

    def _from_electrodes(self, z: torch.Tensor) -> torch.Tensor:  # (B, L, N, D) -> (B, D_tcn, L)
        return self.proj_from_electrodes(rearrange(z, "b l n d -> b (n d) l"))


    def _logits(self, h: torch.Tensor) -> torch.Tensor:  # (B, D_tcn, L) -> (B, T)
        return self.head(h)


def _in_bfloat16(name: str, stage: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """One stage under model.precision bfloat16: autocast to bf16, or float32 for FLOAT32_STAGES."""

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        device_type = inputs[0].device.type
        if name in FLOAT32_STAGES:
            with torch.autocast(device_type, enabled=False):
                return stage(*(t.float() for t in inputs))
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = stage(*inputs)
        return out.float() if name == "logits" else out

    return run


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
