"""TCN encoder and projection head (PyTorch reference).

Glossary: B batch, C input channels (electrodes or derivations), T samples, L = T / stride_down
steps, D_tcn encoder width (512 at full size).

TCNEncoder (original_spec.md §2, "MinimalTCN"): 8 dilated non-causal Conv1d layers, kernel 7,
dilation 2^i, weight norm, ReLU, dropout, no residual connections, symmetric "same" padding
(receptive field 1 + 6·255 = 1,531 samples ≈ 6 s); then 1×1 `proj` to D_tcn, 1×1 `channel_proj`
D_tcn → D_tcn and the `downsample` conv with kernel = stride = stride_down. The three last convs
are linear (no activation) and carry no weight norm, which is what the original's parameter count
(7,370,304 at full size) implies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.config import TCNConfig
from common.constants import CONV_GAIN, GUARD_HEAD, GUARD_LOGITS, HEAD_GAIN


def kaiming_uniform_(weight: torch.Tensor, gain: float, generator: torch.Generator | None) -> None:
    """U(±gain·√(6/fan_in)): He-uniform for ReLU (gain √2 folded in as √6), scaled by `gain`."""
    fan_in = weight[0].numel()
    bound = gain * math.sqrt(6.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


class WeightNormConv1d(nn.Module):
    """Conv1d with weight norm, w = g · v / ‖v‖ per output channel (Salimans & Kingma 2016).

    Parameters keep the names of torch's classic `weight_norm` (`weight_g`, `weight_v`, `bias`),
    which is also how the original's checkpoints store them.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 generator: torch.Generator | None = None, gain: float = CONV_GAIN):
        super().__init__()
        self.dilation = dilation
        self.padding = (kernel_size - 1) * dilation // 2
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        kaiming_uniform_(self.weight_v, gain, generator)
        # g starts at ‖v‖, so the initial effective weight is v (as torch's weight_norm does).
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(1, 2), keepdim=True).clone())
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(1, 2), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)


def pointwise_conv(in_channels: int, out_channels: int, gain: float, generator=None,
                   kernel_size: int = 1, stride: int = 1, bias: bool = True) -> nn.Conv1d:
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
    kaiming_uniform_(conv.weight, gain, generator)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class TCNEncoder(nn.Module):
    def __init__(self, n_chans: int, cfg: TCNConfig, generator: torch.Generator | None = None):
        super().__init__()
        widths = (n_chans, *cfg.channels)
        self.layers = nn.ModuleList(
            WeightNormConv1d(widths[i], widths[i + 1], cfg.kernel_size, 2**i, generator, cfg.init_gain)
            for i in range(len(cfg.channels))
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = pointwise_conv(widths[-1], cfg.out_channels, cfg.init_gain, generator)
        self.channel_proj = pointwise_conv(cfg.out_channels, cfg.out_channels, cfg.init_gain, generator)
        self.downsample = pointwise_conv(cfg.out_channels, cfg.out_channels, cfg.init_gain, generator,
                                         kernel_size=cfg.stride_down, stride=cfg.stride_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.dropout(F.relu(layer(x)))  # (B, C_i, T)
        x = self.proj(x)  # (B, D_tcn, T)
        x = self.channel_proj(x)  # (B, D_tcn, T)
        return self.downsample(x)  # (B, D_tcn, L)


class ProjectionHead(nn.Module):
    """(B, D_tcn, L) → (B, T) logits: 1×1 to one map per channel, nearest upsampling back to the
    sample rate (so logits are constant over stride_down-sample blocks), 1×1 to one logit."""

    def __init__(self, d_in: int, n_chans: int, upsample: int, guards: bool,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.upsample = upsample
        self.guards = guards
        self.proj = pointwise_conv(d_in, n_chans, CONV_GAIN, generator)
        self.detect = pointwise_conv(n_chans, 1, HEAD_GAIN, generator)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.proj(h)  # (B, C, L)
        x = torch.repeat_interleave(x, self.upsample, dim=-1)  # (B, C, T)
        if self.guards:  # original (detector.py): nan_to_num (NaN -> 0, ±inf -> ±50) + clamp ±50 before the detector
            x = torch.nan_to_num(x, nan=0.0, posinf=GUARD_HEAD, neginf=-GUARD_HEAD).clamp(-GUARD_HEAD, GUARD_HEAD)
        logits = self.detect(x)[:, 0]  # (B, T)
        if self.guards:  # original: nan_to_num (±inf -> ±50 here too) + clamp ±100 on the logits
            logits = torch.nan_to_num(logits, nan=0.0, posinf=GUARD_HEAD, neginf=-GUARD_HEAD).clamp(-GUARD_LOGITS, GUARD_LOGITS)
        return logits
