"""One training step and one evaluation step, jitted (JAX twin of torchref/train/step.py).

Glossary: B batch (windows), C channels, T samples per window.

    batch = {"x": (B, C, T) float, "y": (B, T) 0/1, "valid": (B,) bool, optional}

train_step: forward in training mode (dropout on, as the model is) -> `compute_loss` ->
nnx.value_and_grad -> optimizer.update (clip, AdamW, schedule: jaxbrr/train/optim.py).
Nothing here clamps, skips or sanitises: a non-finite loss or gradient reaches the metrics and
the parameters as it is, and the training loop decides (`train.nan_policy`). `finite` in the
metrics says whether loss and gradient norm were finite.

The config is a static argument (a frozen, hashable TrainConfig); `pos_weight` is traced, so a
new value (re-estimated each epoch) does not recompile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbrr.config import TrainConfig
from jaxbrr.train.loss import compute_loss
from jaxbrr.train.optim import current_learning_rate


@nnx.jit(static_argnums=3)
def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    batch: dict[str, jax.Array],
    cfg: TrainConfig,
    pos_weight: float | jax.Array = 1.0,
) -> dict[str, jax.Array]:
    """One update of `model` in place. Returns {loss, grad_norm (before clipping), lr (of this
    update; with grad_accum_steps > 1, of the last applied one), finite}."""

    def loss_of(model: nnx.Module) -> jax.Array:
        logits, _ = model(batch["x"])  # (B, T)
        return compute_loss(logits, batch["y"], cfg, pos_weight, batch.get("valid"))

    loss, grads = nnx.value_and_grad(loss_of)(model)
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": current_learning_rate(optimizer.opt_state),
        "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
    }


@nnx.jit
def eval_step(model: nnx.Module, x: jax.Array) -> jax.Array:
    """Seizure probabilities σ(logits), (B, C, T) -> (B, T), with dropout off (the model passed
    in keeps its own mode)."""
    logits, _ = nnx.view(model, deterministic=True, raise_if_not_found=False)(x)  # (B, T)
    return jax.nn.sigmoid(logits)
