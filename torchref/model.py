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

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from jaxbrr.config import ModelConfig
from torchref import graph
from torchref.gnn import GraphMixer
from torchref.mamba import BiMamba2
from torchref.tcn import ProjectionHead, TCNEncoder, pointwise_conv

# Initialisation gains of the original's electrode projections and edge lift (original_spec.md §2,
# §7.1: the edge lift's gain was lowered from 0.5 to 0.1 during the NaN hunt).
TO_ELECTRODES_GAIN = 0.1
FROM_ELECTRODES_GAIN = 0.05
EDGE_LIFT_GAIN = 0.1


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
        taps: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self.guards:  # original: nan_to_num (NaN and ±inf -> 0) + clamp ±10 on the input
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(-10, 10)
        taps["input"] = x  # (B, C, T)
        h = taps["tcn"] = self.tcn(x)  # (B, D_tcn, L)
        if self.config.architecture == "v3":
            h = self._v3(h, taps)  # (B, D_tcn, L)
        elif self.config.architecture == "v2":
            u = rearrange(h, "b d l -> b l d")  # (B, L, D_tcn)
            h = taps["mamba"] = rearrange(self.mamba(u), "b l d -> b d l")  # (B, D_tcn, L)
        logits = taps["logits"] = self.head(h)  # (B, T)
        return logits, taps

    def _v3(self, h: torch.Tensor, taps: OrderedDict) -> torch.Tensor:
        cfg, n = self.config, self.config.n_chans
        e = rearrange(self.proj_to_electrodes(h), "b (n d) l -> b n l d", n=n)  # (B, N, L, D)
        taps["electrodes"] = e
        z = self.node_mamba(rearrange(e, "b n l d -> (b n) l d"))  # (B·N, L, D)
        z = taps["node_mamba"] = rearrange(z, "(b n) l d -> b l n d", n=n)  # (B, L, N, D)
        if cfg.graph.enabled:
            g = cfg.graph
            s = taps["edge_features"] = graph.edge_features(e, g.edge_features, self.guards)  # (B, E, L)
            f = self.edge_lift(rearrange(s, "b e l -> (b e) 1 l"))  # (B·E, F, L)
            if self.guards:  # original: clamp ±3 after the lift
                f = f.clamp(-3, 3)
            f = self.edge_mamba(rearrange(f, "be f l -> be l f"))  # (B·E, L, F)
            w = F.softplus(self.edge_proj(rearrange(f, "be l f -> be f l")))  # (B·E, 1, L)
            w = taps["edge_weights"] = rearrange(w, "(b e) 1 l -> b e l", b=e.shape[0])  # (B, E, L)
            a = taps["adjacency"] = graph.adjacency(w, n, g.top_k, g.edge_threshold)  # (B, L, N, N)
            if g.use_dynamic_pe:
                pe = graph.laplacian_pe(
                    a, g.k_eigenvectors, g.pe_sign, cfg.stability.pe_gradient, cfg.stability.eigh_tau,
                    g.semi_dynamic_interval, g.laplacian_epsilon, self.guards,
                )  # (B, L, N, K)
            else:
                pe = self.static_pe.to(a.dtype).expand(*a.shape[:2], -1, -1)  # (B, L, N, K)
            taps["pe"] = pe
            z = taps["gnn"] = self.gnn(z, a, pe)  # (B, L, N, D)
        z = rearrange(z, "b l n d -> b (n d) l")  # (B, N·D, L)
        h = taps["from_electrodes"] = self.proj_from_electrodes(z)  # (B, D_tcn, L)
        return h


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
