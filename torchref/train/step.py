"""One training step and one evaluation step (PyTorch reference of jaxbrr/train/step.py).

Glossary: B batch (windows), C channels, T samples per window.

    batch = {"x": (B, C, T) float, "y": (B, T) 0/1, "valid": (B,) bool, optional}

train_step = `loss_and_gradients` (model.train() -> forward -> `compute_loss` -> backward) then
`apply_gradients` (clip_grad_norm_ when train.gradient_clip > 0 -> optimizer.step() ->
scheduler.step()). Nothing here clamps, skips or sanitises: a non-finite loss or gradient
reaches the metrics and the parameters as it is. The training loop (torchref/train/loop.py)
calls the two halves itself, to check finiteness before the update (`train.nan_policy`) and to
average micro-batch gradients in between (`train.grad_accum_steps`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common.config import TrainConfig
from torchref.train.loss import compute_loss


def loss_and_gradients(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    pos_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward in training mode and backward: every parameter's `.grad` holds this batch's
    gradient (earlier ones are dropped). Returns (loss, gradient norm), both 0-d and detached."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits, _ = model(batch["x"])  # (B, T)
    loss = compute_loss(logits, batch["y"], cfg, pos_weight, batch.get("valid"))
    loss.backward()
    grad_norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    return loss.detach(), grad_norm


def apply_gradients(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
) -> float:
    """Clip the parameters' `.grad` to train.gradient_clip (when > 0), one AdamW update, one
    schedule step. Returns the LR of this update."""
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.gradient_clip > 0:
        nn.utils.clip_grad_norm_(params, cfg.gradient_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return lr


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    pos_weight: float = 1.0,
) -> dict[str, float]:
    """One update of `model` in place. Returns {loss, grad_norm (before clipping), lr (of this
    update), finite}."""
    loss, grad_norm = loss_and_gradients(model, batch, cfg, pos_weight)
    lr = apply_gradients(model, optimizer, scheduler, cfg)
    loss_value, norm_value = loss.item(), float(grad_norm)
    return {
        "loss": loss_value,
        "grad_norm": norm_value,
        "lr": lr,
        "finite": math.isfinite(loss_value) and math.isfinite(norm_value),
    }


@torch.no_grad()
def eval_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Seizure probabilities σ(logits), (B, C, T) -> (B, T), in eval mode (the model's previous
    mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(x)  # (B, T)
    finally:
        model.train(was_training)
    return torch.sigmoid(logits)
