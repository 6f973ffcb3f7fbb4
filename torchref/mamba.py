"""Mamba-2 mixer and the bidirectional Mamba-2 stack, in PyTorch (the reference for jaxbrr/mamba.py).

Glossary
    B  batch (batch · electrodes for the node stream, batch · edges for the edge stream)
    L  sequence length (time steps, T / stride)
    D  model width (d_model);  E = expand · D = d_inner
    H  heads = E / P;  P  head dim (headdim);  N  state size (d_state);  G  groups of B/C (1 here)
    W  conv kernel width (d_conv)

`Mamba2` is the training-path math of `mamba_ssm.modules.mamba2.Mamba2` (mamba-ssm 2.3.2, ngroups 1,
no dt_limit, norm_before_gate False) with mamba_ssm's parameter names and shapes, so a real
mamba_ssm state dict loads with strict=True. `BiMamba2Layer`/`BiMamba2` are the original project's
bidirectional stack (reference/original_spec.md §2).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.nn.utils import skip_init
from torch.utils.checkpoint import checkpoint

from common.config import MambaConfig, SSMConfig
from common.constants import (
    A_INIT_RANGE,
    DT_INIT_FLOOR,
    DT_MAX,
    DT_MIN,
    GUARD_INPUT,
    GUARD_OUTPUT,
    GUARD_PROJ,
    MAMBA_NORM_EPS,
)
from torchref.ssm import SCANS, at_least_float32, selective_scan

BACKENDS = ("torch", "cuda")
# CUDA's limit on a grid's y and z dimensions (the CUDA C Programming Guide, compute capability
# table: "maximum y- or z-dimension of a grid of thread blocks"). mamba_ssm 2.3.2's SSD kernels
# launch batch × nchunks programs along y (ssd_chunk_scan.py _chunk_scan_fwd, ssd_chunk_state.py
# _chunk_state_fwd, ssd_combined.py's backward); Triton passes the grid through unchecked, and
# CUDA refuses the launch ("invalid argument"). The full-size edge stream at batch 8 asks for
# 8·171 sequences × 60 chunks = 82080.
CUDA_GRID_Y = 65535




def _init_like_torch_default(module: nn.Linear | nn.Conv1d, generator: torch.Generator | None) -> None:
    """nn.Linear / nn.Conv1d's own reset_parameters, drawn from `generator`:
    weight kaiming_uniform(a=√5) = U(±1/√fan_in), bias U(±1/√fan_in)."""
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def in_grid_pieces(mixer, u: torch.Tensor, chunk_size: int, limit: int) -> torch.Tensor:
    """mixer(u) for u (B, L, D), run on pieces of the batch of at most limit // ceil(L / chunk_size)
    sequences each, so that no kernel launch holds more than `limit` programs along the grid's y
    axis (CUDA_GRID_Y); the sequences are independent, so the result is the one call's."""
    chunks = -(-u.shape[1] // chunk_size)
    if chunks > limit:
        raise ValueError(f"a sequence of {u.shape[1]} steps is {chunks} chunks of model.ssm.chunk_size = {chunk_size}, "
                         f"more than one CUDA launch can hold ({limit}): raise model.ssm.chunk_size")
    piece = limit // chunks
    if u.shape[0] <= piece:
        return mixer(u)
    return torch.cat([mixer(part) for part in u.split(piece)])


def import_upstream_mamba2() -> type:
    """mamba_ssm's Mamba2 class. mamba_ssm's package import also imports `selective_scan_cuda`,
    Mamba-1's CUDA extension, which Mamba2 never calls and which a build without CUDA extensions
    (MAMBA_SKIP_CUDA_BUILD, the CPU oracle and the GPU check's wheel) lacks: that one module name
    is then bound to an empty module. Mamba2's own kernels are Triton, compiled at first use."""
    if "selective_scan_cuda" not in sys.modules and importlib.util.find_spec("selective_scan_cuda") is None:
        sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    return importlib.import_module("mamba_ssm.modules.mamba2").Mamba2


def gated_rms_norm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """rmsnorm(y · silu(z)) · weight over the last axis (one group): mamba_ssm's `rms_norm_ref`
    with norm_before_gate=False (mamba_ssm/ops/triton/layernorm_gated.py)."""
    dtype = y.dtype
    y, z = at_least_float32(y), at_least_float32(z)
    y = y * F.silu(z)
    rstd = 1 / torch.sqrt(y.square().mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    return (y * rstd * weight).to(dtype)


class GatedRMSNorm(nn.Module):
    """Holds `norm.weight` (E,) like mamba_ssm's RMSNormGated (ones, eps 1e-5, no bias)."""

    def __init__(self, dim: int, eps: float = MAMBA_NORM_EPS, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_rms_norm(y, z, self.weight, self.eps)


class Mamba2(nn.Module):
    """(B, L, D) -> (B, L, D). in_proj -> [z | xBC | dt] -> causal depthwise conv + SiLU on xBC
    -> x, B, C -> dt = softplus(dt + dt_bias), A = -exp(A_log) -> SSD scan + D·x
    -> rmsnorm(y · silu(z)) · w -> out_proj.

    dtype-generic: float32 and float64 run in their own dtype. The official module computes
    `A = -exp(A_log.float())` and the gated norm with `.float()` (upcast=True), i.e. in float32
    even for a float64 module, which caps its float64 agreement at ~1e-7
    (reference/ssm_gnn_anchors.md §0 point 2). Here dt, A and the norm are upcast only from
    bfloat16/float16 to float32.

    backend="cuda" runs mamba_ssm's own module (Triton kernels) on this module's parameters; it
    raises at construction when CUDA or mamba_ssm is missing, never falls back.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        scan: str = "chunked",
        chunk_size: int = 16,
        backend: str = "torch",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"model.ssm.scan = {scan!r} is not one of {SCANS}")
        if backend not in BACKENDS:
            raise ValueError(f"model.ssm.backend = {backend!r} is not one of {BACKENDS}")
        if chunk_size < 1:
            raise ValueError(f"model.ssm.chunk_size must be >= 1, got {chunk_size}")
        if (expand * d_model) % headdim:
            raise ValueError(f"expand*d_model = {expand * d_model} is not a multiple of headdim {headdim}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.expand, self.headdim = expand, headdim
        self.d_inner = expand * d_model
        self.nheads = self.d_inner // headdim
        self.ngroups = 1
        self.conv_dim = self.d_inner + 2 * self.ngroups * d_state
        self.scan, self.chunk_size, self.backend = scan, chunk_size, backend
        d_in_proj = 2 * self.d_inner + 2 * self.ngroups * d_state + self.nheads  # [z | x B C | dt]

        device = torch.device(device) if device is not None else torch.get_default_device()
        factory = {"device": device, "dtype": dtype}
        # skip_init: built uninitialised, then drawn from `generator` in reset_parameters.
        self.in_proj = skip_init(nn.Linear, d_model, d_in_proj, bias=False, **factory)
        self.conv1d = skip_init(
            nn.Conv1d, self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
            padding=d_conv - 1, bias=True, **factory,
        )
        self.dt_bias = nn.Parameter(torch.empty(self.nheads, **factory))
        self.A_log = nn.Parameter(torch.empty(self.nheads, **factory))
        self.D = nn.Parameter(torch.empty(self.nheads, **factory))
        for param in (self.dt_bias, self.A_log, self.D):
            param._no_weight_decay = True  # as mamba_ssm: the optimizer reads this flag
        self.norm = GatedRMSNorm(self.d_inner, MAMBA_NORM_EPS, **factory)
        self.out_proj = skip_init(nn.Linear, self.d_inner, d_model, bias=False, **factory)
        self.reset_parameters(generator)

        # Kept outside the module tree: its parameters are swapped for ours at each call, so the
        # state dict holds each parameter once.
        upstream = self._build_upstream(dtype) if backend == "cuda" else None
        object.__setattr__(self, "_upstream", upstream)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """mamba_ssm Mamba2's init, in its draw order (in_proj, conv1d, dt, A, out_proj): seeded
        alike, a float32 module gets the very numbers `torch.manual_seed(s); Mamba2(...)` gets."""
        _init_like_torch_default(self.in_proj, generator)
        _init_like_torch_default(self.conv1d, generator)
        # dt log-uniform in [DT_MIN, DT_MAX], floored; dt_bias = softplus⁻¹(dt) = dt + log(-expm1(-dt)).
        u = torch.rand(self.nheads, generator=generator, dtype=self.dt_bias.dtype, device=self.dt_bias.device)
        dt = torch.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        dt = torch.clamp(dt, min=DT_INIT_FLOOR)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # A ~ U(1, 16) drawn in float32 as mamba_ssm does, whatever the module's dtype.
        A = torch.empty(self.nheads, dtype=torch.float32, device=self.A_log.device)
        A.uniform_(*A_INIT_RANGE, generator=generator)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)
        _init_like_torch_default(self.out_proj, generator)

    def _build_upstream(self, dtype):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "model.ssm.backend = 'cuda' needs a CUDA GPU, and torch.cuda.is_available() is False; "
                "set model.ssm.backend: torch to run the pure-PyTorch scan"
            )
        try:
            UpstreamMamba2 = import_upstream_mamba2()
        except ImportError as err:
            raise RuntimeError(
                f"model.ssm.backend = 'cuda' needs mamba_ssm and Triton "
                f"(pip install mamba-ssm on a CUDA machine, or `make wheelhouse` for an offline one); importing it failed: {err}"
            ) from err
        # use_mem_eff_path=False: the unfused path (Triton SSD kernel + gated-norm kernel) needs no
        # causal_conv1d package; the fused path computes the same function.
        return UpstreamMamba2(
            self.d_model, d_state=self.d_state, d_conv=self.d_conv, expand=self.expand,
            headdim=self.headdim, chunk_size=self.chunk_size, use_mem_eff_path=False,
            device="meta", dtype=dtype,
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self._upstream is not None:
            params = dict(self.named_parameters())
            return in_grid_pieces(lambda part: torch.func.functional_call(self._upstream, params, (part,)), u,
                                  self.chunk_size, CUDA_GRID_Y)
        length = u.shape[1]
        zxbcdt = self.in_proj(u)  # (B, L, 2E + 2GN + H)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        # z (B, L, E), xBC (B, L, E + 2GN), dt (B, L, H)

        # Causal depthwise conv: padding W-1 on both ends, keep the first L outputs.
        xBC = rearrange(xBC, "b l c -> b c l")  # (B, E + 2GN, L)
        xBC = self.conv1d(xBC)[..., :length]  # (B, E + 2GN, L)
        xBC = F.silu(rearrange(xBC, "b c l -> b l c"))  # (B, L, E + 2GN)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = rearrange(x, "b l (h p) -> b l h p", p=self.headdim)  # (B, L, H, P)
        B = rearrange(B, "b l (g n) -> b l g n", g=self.ngroups)  # (B, L, G, N)
        C = rearrange(C, "b l (g n) -> b l g n", g=self.ngroups)  # (B, L, G, N)

        dt = F.softplus(at_least_float32(dt) + self.dt_bias)  # (B, L, H); identity above 20, as the kernel
        A = -torch.exp(at_least_float32(self.A_log))  # (H,)
        y = selective_scan(x, dt, A, B, C, self.scan, self.chunk_size)  # (B, L, H, P)
        y = y + x * rearrange(self.D, "h -> h 1")  # (B, L, H, P)
        y = rearrange(y, "b l h p -> b l (h p)")  # (B, L, E)
        y = self.norm(y, z)  # (B, L, E)
        return self.out_proj(y)  # (B, L, D)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, scan={self.scan!r}, chunk_size={self.chunk_size}, backend={self.backend!r}"
        )


class BiMamba2Layer(nn.Module):
    """(B, L, D) -> (B, L, D): y = LayerNorm(u + dropout(proj([fwd(u), flip(bwd(flip(u)))]))).

    guards=True (stability.guards: original) adds the original's ops, in its order: nan_to_num and
    clamp ±10 on the input, clamp ±5 after proj, clamp ±10 on the output. guards=False: none at all.
    """

    def __init__(
        self,
        cfg: MambaConfig,
        ssm: SSMConfig,
        guards: bool,
        layernorm_eps: float,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if not isinstance(guards, bool):  # a config string such as "none" would be truthy
            raise TypeError(f"guards must be a bool (stability.guards == 'original'), got {guards!r}")
        self.guards = guards
        mixer = dict(
            d_model=cfg.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
            headdim=cfg.headdim, scan=ssm.scan, chunk_size=ssm.chunk_size, backend=ssm.backend,
            generator=generator, dtype=dtype, device=device,
        )
        self.fwd = Mamba2(**mixer)
        self.bwd = Mamba2(**mixer)  # its own parameters, run on the time-reversed sequence
        device = torch.device(device) if device is not None else torch.get_default_device()
        self.proj = skip_init(nn.Linear, 2 * cfg.d_model, cfg.d_model, bias=True, device=device, dtype=dtype)
        with torch.no_grad():
            _init_like_torch_default(self.proj, generator)
        self.norm = nn.LayerNorm(cfg.d_model, eps=layernorm_eps, device=device, dtype=dtype)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.guards:
            u = torch.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0).clamp(-GUARD_INPUT, GUARD_INPUT)
        forward = self.fwd(u)  # (B, L, D)
        # Flip before the mixer so its causal padding sits at the (reversed) start.
        backward = torch.flip(self.bwd(torch.flip(u, dims=[1])), dims=[1])  # (B, L, D)
        mixed = self.proj(torch.cat([forward, backward], dim=-1))  # (B, L, 2D) -> (B, L, D)
        if self.guards:
            mixed = mixed.clamp(-GUARD_PROJ, GUARD_PROJ)
        out = self.norm(u + self.dropout(mixed))  # (B, L, D)
        if self.guards:
            out = out.clamp(-GUARD_OUTPUT, GUARD_OUTPUT)
        return out


class BiMamba2(nn.Module):
    """cfg.n_layers BiMamba2Layers, (B, L, D) -> (B, L, D). With guards the stack also clamps ±10
    after every 2nd layer and at the end (the original's stack).

    remat (config `model.remat`): each layer is recomputed in the backward pass instead of keeping
    its chunked-scan intermediates (torch.utils.checkpoint, non-reentrant; it restores the RNG
    state, so the recomputed dropout masks are the ones of the forward pass).
    """

    def __init__(
        self,
        cfg: MambaConfig,
        ssm: SSMConfig,
        guards: bool,
        layernorm_eps: float,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        remat: bool = False,
    ):
        super().__init__()
        self.guards = guards
        self.remat = remat
        self.layers = nn.ModuleList(
            BiMamba2Layer(cfg, ssm, guards, layernorm_eps, generator=generator, dtype=dtype, device=device)
            for _ in range(cfg.n_layers)
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            if self.remat and torch.is_grad_enabled():
                u = checkpoint(layer, u, use_reentrant=False)  # (B, L, D)
            else:
                u = layer(u)  # (B, L, D)
            if self.guards and index % 2 == 1:
                u = u.clamp(-GUARD_OUTPUT, GUARD_OUTPUT)
        if self.guards:
            u = u.clamp(-GUARD_OUTPUT, GUARD_OUTPUT)
        return u
