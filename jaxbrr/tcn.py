"""TCN encoder and projection head (Flax NNX twin of torchref/tcn.py).

Glossary: B batch, C input channels (electrodes or derivations), T samples, L = T / stride_down
steps, D_tcn encoder width (512 at full size).

Inside, activations are channels-last (B, T, C): on this CPU XLA's convolutions with dropout run
faster in NWC than in NCW (reference/perf_grounding.md §2). The model's public layout stays
(B, C, T). Kernels are stored in Flax's (K, C_in, C_out) layout; the weight-norm magnitude
`weight_g` is (C_out,). parity/convert.py holds the one table that maps torch's layouts here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from common.config import TCNConfig
from common.constants import CONV_GAIN, GUARD_HEAD, GUARD_LOGITS, HEAD_GAIN
from jaxbrr.init import kaiming_uniform


def pointwise_conv(in_channels: int, out_channels: int, gain: float, *, rngs: nnx.Rngs,
                   kernel_size: int = 1, stride: int = 1, bias: bool = True,
                   param_dtype=jnp.float32, dtype=None) -> nnx.Conv:
    """Channels-last Conv1d without padding (1×1, or kernel = stride for the downsampling).
    dtype: the compute dtype (None: the input's); parameters stay param_dtype."""
    return nnx.Conv(in_channels, out_channels, kernel_size=(kernel_size,), strides=(stride,),
                    padding="VALID", use_bias=bias, kernel_init=kaiming_uniform(gain),
                    bias_init=nnx.initializers.zeros, param_dtype=param_dtype, dtype=dtype, rngs=rngs)


class WeightNormConv1d(nnx.Module):
    """Dilated "same" Conv1d with weight norm, w = g · v / ‖v‖ per output channel
    (Salimans & Kingma 2016). Channels-last: (B, T, C_in) -> (B, T, C_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, *,
                 rngs: nnx.Rngs, param_dtype=jnp.float32, gain: float = CONV_GAIN):
        self.dilation = dilation
        self.padding = (kernel_size - 1) * dilation // 2
        v = kaiming_uniform(gain)(rngs.params(), (kernel_size, in_channels, out_channels), param_dtype)
        self.weight_v = nnx.Param(v)  # (K, C_in, C_out)
        # g starts at ‖v‖, so the initial effective weight is v (as torch's weight_norm does).
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(v * v, axis=(0, 1))))  # (C_out,)
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype))

    def weight(self) -> jax.Array:
        v = self.weight_v[...]
        return self.weight_g[...] * v / jnp.sqrt(jnp.sum(v * v, axis=(0, 1)))  # (K, C_in, C_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight().astype(x.dtype)
        y = jax.lax.conv_general_dilated(
            x, w, window_strides=(1,), padding=[(self.padding, self.padding)],
            rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"),
        )  # (B, T, C_out)
        return y + self.bias[...].astype(x.dtype)


class TCNEncoder(nnx.Module):
    def __init__(self, n_chans: int, cfg: TCNConfig, *, rngs: nnx.Rngs, dtype=None):
        widths = (n_chans, *cfg.channels)
        self.layers = nnx.List([
            WeightNormConv1d(widths[i], widths[i + 1], cfg.kernel_size, 2**i, rngs=rngs, gain=cfg.init_gain)
            for i in range(len(cfg.channels))
        ])
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        self.proj = pointwise_conv(widths[-1], cfg.out_channels, cfg.init_gain, rngs=rngs, dtype=dtype)
        self.channel_proj = pointwise_conv(cfg.out_channels, cfg.out_channels, cfg.init_gain, rngs=rngs, dtype=dtype)
        self.downsample = pointwise_conv(cfg.out_channels, cfg.out_channels, cfg.init_gain, rngs=rngs, dtype=dtype,
                                         kernel_size=cfg.stride_down, stride=cfg.stride_down)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, C) -> (B, L, D_tcn), channels-last."""
        for layer in self.layers:
            x = self.dropout(jax.nn.relu(layer(x)))  # (B, T, C_i)
        x = self.proj(x)  # (B, T, D_tcn)
        x = self.channel_proj(x)  # (B, T, D_tcn)
        return self.downsample(x)  # (B, L, D_tcn)


class ProjectionHead(nnx.Module):
    """(B, L, D_tcn) -> (B, T) logits: 1×1 to one map per channel, nearest upsampling back to the
    sample rate, 1×1 to one logit (as torchref's ProjectionHead)."""

    def __init__(self, d_in: int, n_chans: int, upsample: int, guards: bool, *, rngs: nnx.Rngs,
                 dtype=None):
        self.upsample = upsample
        self.guards = guards
        self.proj = pointwise_conv(d_in, n_chans, CONV_GAIN, rngs=rngs, dtype=dtype)
        self.detect = pointwise_conv(n_chans, 1, HEAD_GAIN, rngs=rngs, dtype=dtype)

    def __call__(self, h: jax.Array) -> jax.Array:
        x = self.proj(h)  # (B, L, C)
        x = jnp.repeat(x, self.upsample, axis=1)  # (B, T, C)
        if self.guards:  # original (detector.py): nan_to_num (NaN -> 0, ±inf -> ±50) + clamp ±50 before the detector
            x = jnp.clip(jnp.nan_to_num(x, nan=0.0, posinf=GUARD_HEAD, neginf=-GUARD_HEAD), -GUARD_HEAD, GUARD_HEAD)
        logits = self.detect(x)[..., 0]  # (B, T)
        if self.guards:  # original: nan_to_num (±inf -> ±50 here too) + clamp ±100 on the logits
            logits = jnp.clip(jnp.nan_to_num(logits, nan=0.0, posinf=GUARD_HEAD, neginf=-GUARD_HEAD), -GUARD_LOGITS, GUARD_LOGITS)
        return logits
