"""AdamW, its learning-rate schedule and its weight-decay mask (optax twin of torchref/train/optim.py).

    chain(clip_by_global_norm(train.gradient_clip)   [left out when 0],
          adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay, mask))
    wrapped in optax.MultiSteps when train.grad_accum_steps > 1
(train.nan_policy skip keeps the state of a non-finite step in jaxbrr/train/step.py, by the
loop's own test: loss and gradient norm finite)

optax's adamw and torch.optim.AdamW compute the same update (both decoupled, decay scaled by
the learning rate; m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)):

    p ← p − lr·(m̂/(√v̂ + eps) + wd·p)

tests/jaxbrr/train/test_optim.py checks it against torch step by step in float64.

Clipping differs from torch's `clip_grad_norm_` by one constant: torch multiplies by
c/(‖g‖ + 1e-6), optax by c/‖g‖ (both only when ‖g‖ > c). The gradients differ by a factor
1 + 1e-6/‖g‖. Adam's update is invariant to that scale only where |ĝ| is well above its eps:
on the test's parameters the two agree to 2e-10 over 12 clipped updates (float64; unclipped
5e-16), but on the tiny model, whose gradients hold elements below eps, the first clipped
update differs by up to 4.2e-5 of a tensor's scale (parity/test_train.py's docstring), which is
why that parity test compares float64 runs unclipped.

The schedule counts optimizer updates: with grad_accum_steps = k, `total_steps` is the number
of batches / k.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from common.config import TrainConfig
from jaxbrr.mamba import CausalDepthwiseConv1d, GatedRMSNorm
from jaxbrr.tcn import WeightNormConv1d

# torch.optim.AdamW's defaults, which the original uses (original_spec.md §3.2).
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """W = max(1, ⌊warmup_ratio · total_steps⌋) (original §3.3)."""
    return max(1, int(cfg.warmup_ratio * total_steps))


def learning_rate_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """lr · factor(s) for the s-th update (s = 0, 1, ...), W = warmup_steps:

        factor(s) = (s + 1) / W                                      for s < W
                  = 0.5 · (1 + cos(π · min(1, (s − W) / max(1, total − W))))  otherwise

    The original's LambdaLR factor, minus its one-step spike: it restored the base LR after
    constructing the LambdaLR, so its update 0 ran at the full LR (and update 1 at 2/W · lr).
    Here update 0 runs at lr/W. The cosine ends at 0 at s = total and stays there (the min;
    the original never steps past total, where its cosine would rise again).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = warmup_steps(cfg, total_steps)
    decay = max(1, total_steps - warmup)

    def schedule(count: jax.Array) -> jax.Array:
        # The default float (float64 under jax_enable_x64): int32 / int would give float32.
        step = jnp.asarray(count).astype(jnp.result_type(float))
        warm = (step + 1) / warmup
        progress = jnp.minimum(1.0, (step - warmup) / decay)
        cosine = 0.5 * (1 + jnp.cos(math.pi * progress))
        return cfg.lr * jnp.where(step < warmup, warm, cosine)

    return schedule


# ----------------------------------------------------------------------------------------------
# weight-decay mask

# Which parameter of which module type decays. Weights (kernels) do, and so does weight norm's
# magnitude g: w = g·v/‖v‖, so decaying v alone leaves w as it is, and the original decays g (its
# name matches none of its exclusions, original_spec.md 3.2). Biases and every norm's parameters
# do not. Mamba2's dt_bias, A_log and D carry
# `no_weight_decay=True` metadata (mamba_ssm's `_no_weight_decay`), read below. A parameter in
# none of these is an error, not a silent default.
DECAY_BY_MODULE: dict[type, dict[str, bool]] = {
    nnx.Linear: {"kernel": True, "bias": False},
    nnx.Conv: {"kernel": True, "bias": False},
    CausalDepthwiseConv1d: {"kernel": True, "bias": False},
    WeightNormConv1d: {"weight_v": True, "weight_g": True, "bias": False},
    nnx.LayerNorm: {"scale": False, "bias": False},
    nnx.RMSNorm: {"scale": False},
    GatedRMSNorm: {"weight": False},
}


def _decays(module: nnx.Module, name: str, param: nnx.Variable, path: tuple) -> bool:
    if param.get_metadata().get("no_weight_decay", False):
        return False
    table = DECAY_BY_MODULE.get(type(module), {})
    if name not in table:
        raise TypeError(
            f"weight_decay_mask: no rule for parameter {'/'.join(map(str, path))} "
            f"({type(module).__name__}.{name}); add it to DECAY_BY_MODULE in jaxbrr/train/optim.py "
            "or give the Param no_weight_decay=True metadata"
        )
    return table[name]


def weight_decay_mask(model: nnx.Module) -> nnx.State:
    """A bool per nnx.Param of `model` (the structure of `nnx.state(model, nnx.Param)`): True
    where weight decay applies. Decided by module type and Param metadata, never by name."""
    decide: dict[tuple, bool] = {}
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        for name, value in vars(node).items():
            if isinstance(value, nnx.Param):
                decide[(*path, name)] = _decays(node, name, value, (*path, name))
    params = nnx.state(model, nnx.Param)
    return nnx.from_flat_state({path: decide[path] for path, _ in nnx.to_flat_state(params)})


# ----------------------------------------------------------------------------------------------
# the optimizer


def make_optimizer(
    cfg: TrainConfig,
    total_steps: int,
    decay_mask: nnx.State | None = None,
) -> optax.GradientTransformation:
    """The optax transformation for `nnx.Optimizer(model, tx, wrt=nnx.Param)`.

    decay_mask: `weight_decay_mask(model)` (or any pytree of bools that is a prefix of the
    parameters); None decays every parameter. The LR of the last applied update is in the state
    (`current_learning_rate`)."""
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=learning_rate_schedule(cfg, total_steps),
        b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=cfg.weight_decay, mask=decay_mask,
    )
    tx = adamw
    if cfg.gradient_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.gradient_clip), adamw)
    if cfg.grad_accum_steps > 1:
        # Averages k successive gradients, then applies one update of the inner chain (so the
        # clip sees the averaged gradient and the schedule counts applied updates).
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps).gradient_transformation()
    return tx


def make_nnx_optimizer(model: nnx.Module, cfg: TrainConfig, total_steps: int) -> nnx.Optimizer:
    """nnx.Optimizer over the model's Params with `weight_decay_mask(model)`."""
    return nnx.Optimizer(model, make_optimizer(cfg, total_steps, weight_decay_mask(model)), wrt=nnx.Param)


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate of the last applied update (0-d array), read from the optax state
    (`nnx.Optimizer.opt_state` or a plain one)."""
    rate = optax.tree_utils.tree_get(opt_state, "hyperparams")["learning_rate"]
    return rate[...] if isinstance(rate, nnx.Variable) else rate
