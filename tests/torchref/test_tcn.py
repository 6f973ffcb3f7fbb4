"""torchref/tcn.py: the original's parameter count, the receptive field of the dilated stack,
weight norm, the init bound and the head's nearest upsampling."""

from __future__ import annotations

import math

import torch

from common.config import load_config
from parity.tolerances import unit_roundoff
from torchref.tcn import ProjectionHead, TCNEncoder, WeightNormConv1d

FULL = load_config("configs/tusz.yaml").model


def test_full_size_parameter_count_is_the_originals():
    """7,370,304 (original_spec.md §2): 8 weight-normed convs (v, g, bias), then three plain convs."""
    encoder = TCNEncoder(19, FULL.tcn)
    assert sum(p.numel() for p in encoder.parameters()) == 7_370_304


def test_receptive_field_is_1_531_samples_and_symmetric():
    """Kernel 7, dilations 1..128, "same" padding: an input sample reaches the 765 samples on each
    side of it, and no farther (before the downsampling, checked through the gradient; biases of
    100 keep every ReLU open, so no path is cut)."""
    cfg = load_config("configs/tiny.yaml", ["model.tcn.channels=[4,4,4,4,4,4,4,4]", "model.tcn.stride_down=1",
                                            "model.tcn.out_channels=4", "model.tcn.dropout=0"]).model.tcn
    encoder = TCNEncoder(2, cfg, torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        for layer in encoder.layers:
            layer.bias.fill_(100.0)
    x = torch.randn(1, 2, 4001, dtype=torch.float64, requires_grad=True)
    encoder(x)[0, :, 2000].sum().backward()
    reached = torch.nonzero(x.grad[0].abs().sum(0)).flatten()
    half = (cfg.kernel_size - 1) // 2 * (2 ** len(cfg.channels) - 1)
    assert half == 765 and (reached.min().item(), reached.max().item()) == (2000 - half, 2000 + half)


# g·v/‖v‖ in float32 against v: two norms of K·C_in = 21 products (γ_21/2 + u each), a division and
# a product: at most 2·(21 + 3)·u = 2.9e-6
NORM_RTOL = 2 * (7 * 3 + 3) * unit_roundoff("float32")


def test_weight_norm_is_g_times_v_over_its_norm_and_starts_as_v():
    conv = WeightNormConv1d(3, 5, 7, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(conv.weight(), conv.weight_v, rtol=NORM_RTOL, atol=0)  # g = ‖v‖ at init
    with torch.no_grad():
        conv.weight_g.mul_(3.0)
    norms = conv.weight().norm(dim=(1, 2))
    torch.testing.assert_close(norms, 3.0 * conv.weight_v.norm(dim=(1, 2)), rtol=NORM_RTOL, atol=0)


def test_init_is_kaiming_uniform_times_the_gain():
    conv = WeightNormConv1d(64, 128, 7, 1, torch.Generator().manual_seed(0), gain=0.2)
    bound = 0.2 * math.sqrt(6.0 / (64 * 7))
    v = conv.weight_v.detach()
    assert v.abs().max().item() <= bound and v.abs().max().item() > 0.99 * bound  # 57,344 draws fill the range
    assert torch.count_nonzero(conv.bias) == 0


def test_head_holds_each_step_for_stride_samples():
    head = ProjectionHead(8, 3, upsample=16, guards=False, generator=torch.Generator().manual_seed(0))
    logits = head(torch.randn(2, 8, 5))  # (B, D, L)
    assert logits.shape == (2, 80)
    blocks = logits.reshape(2, 5, 16)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))  # piecewise constant, 62.5 ms at 256 Hz


def test_guards_original_map_inf_to_50_as_the_originals_detector():
    """guards: original reproduces detector.py's nan_to_num(nan=0, posinf=50, neginf=-50) before
    the detector (then clamp ±50) and on the logits (then clamp ±100), op for op (DESIGN.md §2)."""
    head = ProjectionHead(1, 1, upsample=1, guards=True)
    with torch.no_grad():
        head.proj.weight.fill_(1.0)  # x = h
        head.detect.weight.fill_(float("inf"))  # logits ±inf from ±50, NaN from 0
    h = torch.tensor([[[float("inf"), -float("inf"), float("nan"), 3.0, 1e30]]])  # (B, D, L)
    assert head(h).tolist() == [[50.0, -50.0, 0.0, 50.0, 50.0]]
    with torch.no_grad():
        head.detect.weight.fill_(1.0)
    assert head(h).tolist() == [[50.0, -50.0, 0.0, 3.0, 50.0]]  # the detector's input, mapped and clamped
