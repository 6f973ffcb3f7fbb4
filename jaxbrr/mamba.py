"""Mamba-2 mixer and the bidirectional Mamba-2 stack, in Flax NNX (the twin of torchref/mamba.py).

Glossary
    B  batch (batch · electrodes for the node stream, batch · edges for the edge stream)
    L  sequence length (time steps, T / stride)
    D  model width (d_model);  E = expand · D = d_inner
    H  heads = E / P;  P  head dim (headdim);  N  state size (d_state);  G  groups of B/C (1 here)
    W  conv kernel width (d_conv)

`Mamba2` is the training-path math of `mamba_ssm.modules.mamba2.Mamba2` (mamba-ssm 2.3.2, ngroups 1,
no dt_limit, norm_before_gate False) with mamba_ssm's parameter names. Leaves follow Flax rules, so
torch -> NNX is a fixed table (DESIGN.md §4):

    torch                       NNX                         conversion
    in_proj.weight (out, in)    in_proj/kernel (in, out)    transpose        (out_proj alike)
    conv1d.weight (C, 1, W)     conv1d/kernel (W, 1, C)     permute(2, 1, 0) (nnx.Conv's depthwise layout)
    conv1d.bias (C,)            conv1d/bias (C,)            as is            (C = E + 2GN)
    dt_bias, A_log, D (H,)      dt_bias, A_log, D (H,)      as is
    norm.weight (E,)            norm/weight (E,)            as is
    BiMamba2Layer: proj.weight/bias -> proj/kernel (transposed) / bias; norm.weight/bias ->
    norm/scale / norm/bias (nnx.LayerNorm).

`dtype` (all three modules) is the compute dtype of the projections and the conv, Flax's
convention (None: from inputs and parameters); `param_dtype` the storage dtype. Under bfloat16
compute, dt, A, the scan (cumsums, decays) and the gated norm's statistics still run in float32.
There is no `backend` here: `model.ssm.backend` selects mamba_ssm's CUDA kernels in torchref only;
jaxbrr's own fused GPU kernels are `model.ssm.scan: pallas`: the scan (jaxbrr/ssd_kernel.py, reading
x, B, C in place from xBC) and the skip term with the gated norm (jaxbrr/norm_kernel.py).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax.typing import DTypeLike

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
    SOFTPLUS_THRESHOLD,
)
from jaxbrr import ssm
from jaxbrr.init import uniform
from jaxbrr.ssm import SCANS, at_least_float32


def _linear_like_torch(
    in_features: int, out_features: int, use_bias: bool, *, rngs: nnx.Rngs,
    param_dtype: DTypeLike, dtype: DTypeLike | None,
) -> nnx.Linear:
    """nnx.Linear with nn.Linear's own init: kernel and bias U(±1/√fan_in)."""
    bound = 1 / math.sqrt(in_features)
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, kernel_init=uniform(bound),
        bias_init=uniform(bound), param_dtype=param_dtype, dtype=dtype, rngs=rngs,
    )


def gated_rms_norm(y: jax.Array, z: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """rmsnorm(y · silu(z)) · weight over the last axis (one group): mamba_ssm's `rms_norm_ref`
    with norm_before_gate=False (mamba_ssm/ops/triton/layernorm_gated.py)."""
    dtype = y.dtype
    y, z = at_least_float32(y), at_least_float32(z)
    y = y * jax.nn.silu(z)
    rstd = 1 / jnp.sqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True) + eps)  # (..., 1)
    return (y * rstd * weight).astype(dtype)


def skip_and_gated_norm(y: jax.Array, x_src: jax.Array, z_src: jax.Array, D: jax.Array, weight: jax.Array,
                        eps: float, out_dtype=None) -> jax.Array:
    """jaxbrr/norm_kernel.py `gated_norm`'s contract (rows (M, E); x and z the first E columns of
    x_src and z_src; D per column) as the XLA composition its kernels replace: the reference the
    tests hold them to, and what benchmarks/roofline.py stands in for them on a CPU."""
    columns = y.shape[1]
    out = gated_rms_norm(y + x_src[:, :columns] * D, z_src[:, :columns], weight, eps)
    return out if out_dtype is None else out.astype(out_dtype)


class GatedRMSNorm(nnx.Module):
    """Holds `norm/weight` (E,) like mamba_ssm's RMSNormGated (ones, eps 1e-5, no bias)."""

    def __init__(self, dim: int, eps: float = MAMBA_NORM_EPS, *, param_dtype: DTypeLike = jnp.float32):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones(dim, param_dtype))

    def __call__(self, y: jax.Array, z: jax.Array) -> jax.Array:
        return gated_rms_norm(y, z, self.weight[...], self.eps)


class CausalDepthwiseConv1d(nnx.Module):
    """torch's nn.Conv1d(C, C, W, groups=C, padding=W-1)(·)[..., :L], channels last:
    out[t, c] = bias[c] + Σ_k kernel[k, 0, c] · x[t - (W-1) + k, c], zeros before t = 0.

    `kernel` (W, 1, C) is nnx.Conv's layout for feature_group_count=C, so torch's conv1d.weight
    (C, 1, W) converts as weight.permute(2, 1, 0). Computed as W shifted multiply-adds: XLA:CPU's
    grouped convolution took 7.6x longer fwd+bwd at (76, 960, 160).
    """

    def __init__(self, channels: int, width: int, *, rngs: nnx.Rngs,
                 param_dtype: DTypeLike = jnp.float32, dtype: DTypeLike | None = None):
        self.width, self.dtype = width, dtype
        bound = 1 / math.sqrt(width)  # fan_in = (C / groups) · W = W
        self.kernel = nnx.Param(uniform(bound)(rngs.params(), (width, 1, channels), param_dtype))
        self.bias = nnx.Param(uniform(bound)(rngs.params(), (channels,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = promote_dtype((x, self.kernel[...], self.bias[...]), dtype=self.dtype)
        length = x.shape[1]
        x = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0)))  # (B, L + W - 1, C)
        out = bias
        for k in range(self.width):
            out = out + kernel[k, 0] * x[:, k : k + length]  # (B, L, C)
        return out


def softplus(x: jax.Array) -> jax.Array:
    """torch's F.softplus: log1p(exp(x)), and x itself above 20 (mamba_ssm's kernel does the same;
    jax.nn.softplus differs by up to 2e-9 there). The inner minimum keeps exp finite on the unused
    branch, so its gradient is 0, not 0 · inf."""
    safe = jnp.minimum(x, SOFTPLUS_THRESHOLD)
    return jnp.where(x > SOFTPLUS_THRESHOLD, x, jnp.log1p(jnp.exp(safe)))


class Mamba2(nnx.Module):
    """(B, L, D) -> (B, L, D). in_proj -> [z | xBC | dt] -> causal depthwise conv + SiLU on xBC
    -> x, B, C -> dt = softplus(dt + dt_bias), A = -exp(A_log) -> SSD scan + D·x
    -> rmsnorm(y · silu(z)) · w -> out_proj.

    dtype-generic: float32 and float64 (jax_enable_x64) run in their own dtype. dt, A and the norm
    are upcast only from bfloat16/float16 to float32 (the official module forces float32 there
    even for float64, reference/ssm_gnn_anchors.md §0 point 2; torchref does not, nor do we).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        *,
        scan: str = "chunked",
        chunk_size: int = 16,
        rngs: nnx.Rngs,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
    ):
        if scan not in SCANS:
            raise ValueError(f"model.ssm.scan = {scan!r} is not one of {SCANS}")
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
        self.scan, self.chunk_size = scan, chunk_size
        d_in_proj = 2 * self.d_inner + 2 * self.ngroups * d_state + self.nheads  # [z | x B C | dt]

        # mamba_ssm's draw order: in_proj, conv1d, dt, A, out_proj (the numbers differ from torch's).
        factory = {"param_dtype": param_dtype, "dtype": dtype}
        self.in_proj = _linear_like_torch(d_model, d_in_proj, False, rngs=rngs, **factory)
        self.conv1d = CausalDepthwiseConv1d(self.conv_dim, d_conv, rngs=rngs, **factory)
        # dt log-uniform in [DT_MIN, DT_MAX], floored; dt_bias = softplus⁻¹(dt) = dt + log(-expm1(-dt)).
        u = jax.random.uniform(rngs.params(), (self.nheads,), param_dtype)
        dt = jnp.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        dt = jnp.maximum(dt, DT_INIT_FLOOR)
        # no_weight_decay: mamba_ssm's `_no_weight_decay` flag, as Variable metadata.
        self.dt_bias = nnx.Param(dt + jnp.log(-jnp.expm1(-dt)), no_weight_decay=True)
        # A ~ U(1, 16) drawn in float32 as mamba_ssm does, whatever the module's dtype.
        A = jax.random.uniform(rngs.params(), (self.nheads,), jnp.float32, *A_INIT_RANGE)
        self.A_log = nnx.Param(jnp.log(A).astype(param_dtype), no_weight_decay=True)
        self.D = nnx.Param(jnp.ones(self.nheads, param_dtype), no_weight_decay=True)
        self.norm = GatedRMSNorm(self.d_inner, MAMBA_NORM_EPS, param_dtype=param_dtype)
        self.out_proj = _linear_like_torch(self.d_inner, d_model, False, rngs=rngs, **factory)

    def __call__(self, u: jax.Array) -> jax.Array:
        zxbcdt = self.in_proj(u)  # (B, L, 2E + 2GN + H)
        z, xBC, dt = jnp.split(zxbcdt, [self.d_inner, self.d_inner + self.conv_dim], axis=-1)
        # z (B, L, E), xBC (B, L, E + 2GN), dt (B, L, H)

        # Causal depthwise conv, channels last (torch moves channels first for nn.Conv1d).
        xBC = jax.nn.silu(self.conv1d(xBC))  # (B, L, E + 2GN)
        dt = softplus(at_least_float32(dt) + self.dt_bias[...])  # (B, L, H)
        A = -jnp.exp(at_least_float32(self.A_log[...]))  # (H,)
        if self.scan == "pallas":  # jaxbrr's kernels read x, B, C from xBC in place
            y = ssm.ssd_pallas_xbc(xBC, dt, A, self.headdim, self.ngroups, self.chunk_size)  # (B, L, H, P)
            if self.d_inner & (self.d_inner - 1) == 0:  # and the norm too, when Triton can tile its rows
                return self.out_proj(self._skip_and_norm_fused(y, xBC, zxbcdt))  # (B, L, D)
            x = rearrange(xBC[..., :self.d_inner], "b l (h p) -> b l h p", p=self.headdim)  # (B, L, H, P)
            return self.out_proj(self._skip_and_norm(y, x, z))  # (B, L, D)

        x, B, C = jnp.split(xBC, [self.d_inner, self.d_inner + self.ngroups * self.d_state], axis=-1)
        x = rearrange(x, "b l (h p) -> b l h p", p=self.headdim)  # (B, L, H, P)
        B = rearrange(B, "b l (g n) -> b l g n", g=self.ngroups)  # (B, L, G, N)
        C = rearrange(C, "b l (g n) -> b l g n", g=self.ngroups)  # (B, L, G, N)
        y = ssm.selective_scan(x, dt, A, B, C, self.scan, self.chunk_size)  # (B, L, H, P)
        return self.out_proj(self._skip_and_norm(y, x, z))  # (B, L, D)

    def _skip_and_norm(self, y: jax.Array, x: jax.Array, z: jax.Array) -> jax.Array:
        """norm(y + D·x, z): (B, L, H, P) ×2, (B, L, E) -> (B, L, E)."""
        y = y + x * rearrange(self.D[...], "h -> h 1")  # (B, L, H, P)
        y = rearrange(y, "b l h p -> b l (h p)")  # (B, L, E)
        return self.norm(y, z)  # (B, L, E)

    def _skip_and_norm_fused(self, y: jax.Array, xBC: jax.Array, zxbcdt: jax.Array) -> jax.Array:
        """norm(y + D·x, z) as jaxbrr/norm_kernel.py's kernels: over rows (tokens), reading x and z
        in place from xBC and the in_proj output, and writing the dtype out_proj computes in."""
        from jaxbrr import norm_kernel  # Pallas loads slowly, and only scan pallas needs it

        batch, length = y.shape[:2]
        rows = lambda t: t.reshape(batch * length, t.shape[-1])  # noqa: E731  (B, L, ·) -> (B·L, ·), free
        D = jnp.repeat(self.D[...], self.headdim)  # (E,): D_h over head h's columns
        out = norm_kernel.gated_norm(rows(rearrange(y, "b l h p -> b l (h p)")), rows(xBC), rows(zxbcdt), D,
                                     self.norm.weight[...], self.norm.eps, out_dtype=self.out_proj.dtype)
        return out.reshape(batch, length, self.d_inner)  # (B, L, E)


class BiMamba2Layer(nnx.Module):
    """(B, L, D) -> (B, L, D): y = LayerNorm(u + dropout(proj([fwd(u), flip(bwd(flip(u)))]))).

    guards=True (stability.guards: original) adds the original's ops, in its order: nan_to_num and
    clamp ±10 on the input, clamp ±5 after proj, clamp ±10 on the output. guards=False: none at all.
    Dropout draws from its own stream (forked from `rngs` at construction); `nnx.view(model,
    deterministic=True)` or `model.eval()` turns it off.
    """

    def __init__(
        self,
        cfg: MambaConfig,
        ssm: SSMConfig,
        guards: bool,
        layernorm_eps: float,
        *,
        rngs: nnx.Rngs,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
    ):
        if not isinstance(guards, bool):  # a config string such as "none" would be truthy
            raise TypeError(f"guards must be a bool (stability.guards == 'original'), got {guards!r}")
        self.guards = guards
        mixer = dict(
            d_model=cfg.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
            headdim=cfg.headdim, scan=ssm.scan, chunk_size=ssm.chunk_size, rngs=rngs,
            param_dtype=param_dtype, dtype=dtype,
        )
        self.fwd = Mamba2(**mixer)
        self.bwd = Mamba2(**mixer)  # its own parameters, run on the time-reversed sequence
        self.proj = _linear_like_torch(2 * cfg.d_model, cfg.d_model, True, rngs=rngs,
                                       param_dtype=param_dtype, dtype=dtype)
        # Flax's defaults (eps 1e-6, fast variance) differ from torch's LayerNorm (DESIGN.md §4).
        self.norm = nnx.LayerNorm(cfg.d_model, epsilon=layernorm_eps, use_fast_variance=False,
                                  param_dtype=param_dtype, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, u: jax.Array) -> jax.Array:
        if self.guards:
            u = jnp.clip(jnp.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0), -GUARD_INPUT, GUARD_INPUT)
        forward = self.fwd(u)  # (B, L, D)
        # Flip before the mixer so its causal padding sits at the (reversed) start.
        backward = jnp.flip(self.bwd(jnp.flip(u, axis=1)), axis=1)  # (B, L, D)
        mixed = self.proj(jnp.concatenate([forward, backward], axis=-1))  # (B, L, 2D) -> (B, L, D)
        if self.guards:
            mixed = jnp.clip(mixed, -GUARD_PROJ, GUARD_PROJ)
        out = self.norm(u + self.dropout(mixed))  # (B, L, D)
        if self.guards:
            out = jnp.clip(out, -GUARD_OUTPUT, GUARD_OUTPUT)
        return out


class BiMamba2(nnx.Module):
    """cfg.n_layers BiMamba2Layers, (B, L, D) -> (B, L, D). With guards the stack also clamps ±10
    after every 2nd layer and at the end (the original's stack).

    remat=True recomputes each layer in the backward pass instead of storing its activations: the
    layers' states are stacked at call time and run by `jax.lax.scan` with a `jax.checkpoint`-ed
    body, so only the (B, L, D) input of each layer is kept. (On XLA:CPU `jax.checkpoint` around a
    Python loop of layers saved no memory.) Parameters stay per layer (`layers/0/fwd/...`); both
    paths compute the same function, dropout masks included.
    """

    def __init__(
        self,
        cfg: MambaConfig,
        ssm: SSMConfig,
        guards: bool,
        layernorm_eps: float,
        *,
        remat: bool,
        rngs: nnx.Rngs,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
    ):
        self.guards, self.remat = guards, remat
        self.layers = nnx.List(
            BiMamba2Layer(cfg, ssm, guards, layernorm_eps, rngs=rngs, param_dtype=param_dtype, dtype=dtype)
            for _ in range(cfg.n_layers)
        )

    def __call__(self, u: jax.Array) -> jax.Array:
        if self.remat:
            u = self._scan_checkpointed(u)  # (B, L, D)
        else:
            for index, layer in enumerate(self.layers):
                u = layer(u)  # (B, L, D)
                if self.guards and index % 2 == 1:
                    u = jnp.clip(u, -GUARD_OUTPUT, GUARD_OUTPUT)
        if self.guards:
            u = jnp.clip(u, -GUARD_OUTPUT, GUARD_OUTPUT)
        return u

    def _scan_checkpointed(self, u: jax.Array) -> jax.Array:
        """The layer loop as scan(checkpoint(layer)) over the layers' stacked states."""
        splits = [nnx.split(layer, nnx.Param, ...) for layer in self.layers]
        graphdef = splits[0][0]
        if any(split[0] != graphdef for split in splits):
            raise ValueError("BiMamba2 remat needs layers of one structure (same sizes and flags)")
        params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(split[1] for split in splits))
        others = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(split[2] for split in splits))  # RNG state

        @functools.partial(jax.checkpoint, prevent_cse=False)  # inside scan CSE cannot merge steps
        def body(u, per_layer):
            index, layer_params, layer_others = per_layer
            layer = nnx.merge(graphdef, layer_params, layer_others)
            u = layer(u)  # (B, L, D)
            if self.guards:
                u = jnp.where(index % 2 == 1, jnp.clip(u, -GUARD_OUTPUT, GUARD_OUTPUT), u)
            return u, nnx.state(layer, nnx.Not(nnx.Param))  # advanced dropout counters

        indices = jnp.arange(len(self.layers))
        u, others = jax.lax.scan(body, u, (indices, params, others))  # (B, L, D)
        for index, layer in enumerate(self.layers):
            nnx.update(layer, jax.tree.map(lambda leaf, i=index: leaf[i], others))
        return u
