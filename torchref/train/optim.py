"""AdamW, its learning-rate schedule and its weight-decay groups (PyTorch reference of
jaxbrr/train/optim.py).

    torch.optim.AdamW([decay group (weight_decay), no-decay group (0)], lr, betas=(0.9, 0.999), eps=1e-8)
    LambdaLR(factor), stepped once after every optimizer.step()
    clip_grad_norm_(params, train.gradient_clip) before the step when the clip is > 0 (step.py)

This AdamW and optax's adamw compute the same update (decoupled decay, scaled by the LR):
p ← p − lr·(m̂/(√v̂ + eps) + wd·p); tests/jaxbrr/train/test_optim.py checks it in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common.config import TrainConfig
from torchref.mamba import GatedRMSNorm
from torchref.tcn import WeightNormConv1d

# torch.optim.AdamW's defaults, which the original uses (original_spec.md §3.2).
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """W = max(1, ⌊warmup_ratio · total_steps⌋) (original §3.3)."""
    return max(1, int(cfg.warmup_ratio * total_steps))


def lr_factor(step: int, warmup: int, total_steps: int) -> float:
    """(s + 1)/W for s < W, then 0.5·(1 + cos(π·min(1, (s − W)/max(1, total − W))))."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_schedule(cfg: TrainConfig, total_steps: int):
    """step -> lr · lr_factor(step) for the s-th update (s = 0, 1, ...).

    The original's LambdaLR factor, minus its one-step spike: it restored the base LR after
    constructing the LambdaLR, so its update 0 ran at the full LR (and update 1 at 2/W · lr).
    Here update 0 runs at lr/W. The cosine ends at 0 at s = total and stays there."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = warmup_steps(cfg, total_steps)
    return lambda step: cfg.lr * lr_factor(step, warmup, total_steps)


# Which parameter of which module type decays. Weights do, weight norm's magnitude g too (w =
# g·v/‖v‖: decaying v alone leaves w as it is; the original decays g, original_spec.md 3.2); biases
# and every norm's parameters do not. Mamba2's dt_bias, A_log and D carry `_no_weight_decay = True`
# (mamba_ssm's flag), read below. A parameter in none of these is an error.
DECAY_BY_MODULE: dict[type, dict[str, bool]] = {
    nn.Linear: {"weight": True, "bias": False},
    nn.Conv1d: {"weight": True, "bias": False},
    WeightNormConv1d: {"weight_v": True, "weight_g": True, "bias": False},
    nn.LayerNorm: {"weight": False, "bias": False},
    nn.RMSNorm: {"weight": False},
    GatedRMSNorm: {"weight": False},
}


def weight_decay_mask(model: nn.Module) -> dict[str, bool]:
    """{parameter name: True where weight decay applies}, by module type and the
    `_no_weight_decay` flag, never by name."""
    mask: dict[str, bool] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if getattr(param, "_no_weight_decay", False):
                mask[full] = False
                continue
            table = DECAY_BY_MODULE.get(type(module), {})
            if name not in table:
                raise TypeError(
                    f"weight_decay_mask: no rule for parameter {full} ({type(module).__name__}.{name}); "
                    "add it to DECAY_BY_MODULE in torchref/train/optim.py or set param._no_weight_decay"
                )
            mask[full] = table[name]
    return mask


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with two parameter groups (decay, no decay) and the LambdaLR of
    `learning_rate_schedule`; the scheduler's first LR (lr/W) is the one update 0 uses."""
    if cfg.grad_accum_steps != 1:
        raise ValueError(f"train.grad_accum_steps = {cfg.grad_accum_steps}: torchref's train step has "
                         "no gradient accumulation; set train.grad_accum_steps=1 (jaxbrr has it)")
    mask = weight_decay_mask(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [p for n, p in params.items() if mask[n]], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params.items() if not mask[n]], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                  weight_decay=cfg.weight_decay)
    warmup = warmup_steps(cfg, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps)
    )
    return optimizer, scheduler
