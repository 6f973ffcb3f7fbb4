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

The training loop uses `make_train_step`: the same update as a pure function of the split state
(graphdef fixed, state in, state out), jitted with plain `jax.jit` (no per-call graph traversal),
optionally wrapped in `jax.experimental.checkify` float checks (`train.checkify`), and running
data-parallel when the state and batch it is given are laid out on a device mesh (jit follows
the inputs' shardings). Nothing is donated: the loop keeps the state from before a step, which
is what a NaN dump writes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.experimental import checkify

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

    return update(model, optimizer, batch, cfg, pos_weight)


def update(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict[str, jax.Array],
           cfg: TrainConfig, pos_weight: float | jax.Array) -> dict[str, jax.Array]:
    """The body of a training step, untransformed (traced inside nnx.jit or jax.jit)."""

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


def make_train_step(graphdef: nnx.GraphDef, cfg: TrainConfig, use_checkify: bool = False):
    """`step(state, batch, pos_weight) -> (state, metrics)` for `graphdef, state =
    nnx.split((model, optimizer))`, jitted once.

    With use_checkify the step returns `(error, (state, metrics))` instead; `error.throw()` raises
    at the first NaN-producing or dividing-by-zero op inside the jitted step, naming the
    primitive and its source line (jax.experimental.checkify float_checks).
    """

    def step(state, batch, pos_weight):
        model, optimizer = nnx.merge(graphdef, state)
        metrics = update(model, optimizer, batch, cfg, pos_weight)
        return nnx.state((model, optimizer)), metrics

    if use_checkify:
        step = checkify.checkify(step, errors=checkify.float_checks)
    return jax.jit(step)


@nnx.jit
def eval_step(model: nnx.Module, x: jax.Array) -> jax.Array:
    """Seizure probabilities σ(logits), (B, C, T) -> (B, T), with dropout off (the model passed
    in keeps its own mode)."""
    logits, _ = nnx.view(model, deterministic=True, raise_if_not_found=False)(x)  # (B, T)
    return jax.nn.sigmoid(logits)
