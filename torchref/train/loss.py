"""Training losses on per-sample logits (PyTorch reference of jaxbrr/train/loss.py).

Glossary: B batch (windows), T samples per window. Logits and labels are (B, T); `valid` (B,)
marks real windows (False: padding that fills the last batch), which the mean leaves out.

`train.loss: focal` is the original's FocalLoss (original_spec.md §3.4) exactly, clamps included:

    z' = clamp(z, ±100)
    bce = BCEWithLogits(z', y, pos_weight = w)          = w·y·softplus(−z') + (1−y)·softplus(z')
    p   = clamp(σ(z'), 1e-6, 1 − 1e-6);  p_t = y·p + (1−y)(1−p);  α_t = y·α + (1−y)(1−α)
    ℓ   = min(α_t · (1 − clamp(p_t, 1e-7, 1 − 1e-7))^γ · bce, 100)

These clamps are part of the loss's definition, not numerical guards: they set its value (the
cap at 100) and its gradient (zero beyond |z| = 100, a constant focal weight where σ saturates),
so they stay whatever `model.stability.guards` says. w is applied only when |α − 0.5| < 1e-6, as
the original does (with α = 0.5 every element is also scaled by 0.5).

`train.loss: bce` is torch's BCEWithLogitsLoss(pos_weight = w), no clamp.

Both use torch's own BCEWithLogits, as the original: (1−y)·z + (1 + (w−1)y)·(log1p(e^−|z|) +
max(−z, 0)). For a confident correct logit its two terms cancel, so values below ~eps·|z| come
out as 0 (jaxbrr's softplus form keeps them): an absolute difference of at most one ulp of |z|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.config import TrainConfig
from common.train.class_weight import (
    FOCAL_LOGIT_CLAMP,
    FOCAL_LOSS_CAP,
    FOCAL_PROB_EPS,
    FOCAL_PT_EPS,
    loss_pos_weight,
)
from torchref.ssm import at_least_float32


def bce_with_logits(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Per element −[w·y·log σ(z) + (1−y)·log(1−σ(z))] (torch's BCEWithLogitsLoss, reduction none)."""
    z = at_least_float32(logits)
    weight = torch.full((), pos_weight, dtype=z.dtype, device=z.device)  # a fill on the device, no host copy
    return F.binary_cross_entropy_with_logits(z, labels.to(z.dtype), pos_weight=weight, reduction="none")


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    gamma: float,
    pos_weight: float = 1.0,
) -> torch.Tensor:
    """The original's focal loss per element (module docstring); pos_weight is used as given."""
    z = at_least_float32(logits).clamp(-FOCAL_LOGIT_CLAMP, FOCAL_LOGIT_CLAMP)
    y = labels.to(z.dtype)
    bce = bce_with_logits(z, y, pos_weight)  # (B, T)
    p = torch.sigmoid(z).clamp(FOCAL_PROB_EPS, 1 - FOCAL_PROB_EPS)
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    miss = 1 - p_t.clamp(FOCAL_PT_EPS, 1 - FOCAL_PT_EPS)
    return torch.clamp(alpha_t * miss**gamma * bce, max=FOCAL_LOSS_CAP)  # (B, T)


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of (B, T) values over the valid windows' elements; 0 when no window is valid.

    `where`, not a product: a padded window's value (even a non-finite one) reaches neither the
    mean nor, through it, the gradient of the valid ones. Its own elements' gradient is the zero
    cotangent times their partials, NaN where those are: compute_loss zeroes a left-out window's
    labels first; non-finite inputs of one poison the model's gradients whatever the loss does."""
    if valid is None:
        return values.mean()
    keep = valid.to(torch.bool)[:, None]  # (B, 1)
    total = torch.where(keep, values, 0.0).sum()
    count = keep.sum().clamp(min=1) * values.shape[1]
    return total / count


def compute_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    pos_weight: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The configured loss (`train.loss`), averaged as the original: over all B·T elements
    (only the valid windows'). `pos_weight` is w before the α rule (see `loss_pos_weight`)."""
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must both be (B, T)")
    w = loss_pos_weight(cfg, pos_weight)
    if valid is not None:  # a left-out window's labels, even NaN, must not reach the gradient: masked_mean's
        # where stops their values, but its zero cotangent meets the loss's products (0 · NaN = NaN)
        labels = torch.where(valid.to(torch.bool)[:, None], labels, torch.zeros_like(labels))
    if cfg.loss == "focal":
        values = focal_loss(logits, labels, cfg.focal_alpha, cfg.focal_gamma, w)
    elif cfg.loss == "bce":
        values = bce_with_logits(logits, labels, w)
    else:
        raise ValueError(f"train.loss = {cfg.loss!r} is not one of focal, bce")
    return masked_mean(values, valid)
