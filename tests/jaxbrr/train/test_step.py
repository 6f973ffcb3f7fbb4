"""jaxbrr.train.step on the tiny model: five updates on one fixed batch lower the loss, the step
compiles once (a new pos_weight or valid mask does not recompile), the metrics are finite and
report the schedule's LR, the valid mask excludes a padded window from the gradient, and the
eval step is deterministic and leaves the model in training mode."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from common.config import load_config
from jaxbrr.model import SeizureDetector
from jaxbrr.train import step as step_module
from jaxbrr.train.loss import compute_loss
from jaxbrr.train.optim import learning_rate_schedule, make_nnx_optimizer
from jaxbrr.train.step import eval_step, train_step

TOTAL_STEPS = 100
TRACES: list[int] = []


def counting_loss(*args, **kwargs):
    TRACES.append(1)  # runs once per trace of train_step, never per call
    return compute_loss(*args, **kwargs)


@pytest.fixture(scope="module")
def setup():
    # A train config of its own, so that no other test's compile is reused here.
    config = load_config("configs/tiny.yaml", ["train.lr=3e-3", "train.warmup_ratio=0.02",
                                               "train.gradient_clip=1.0", "train.weight_decay=0.01",
                                               "train.focal_gamma=2.0"])
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (2, 19, config.window_samples))  # (B, C, T)
    onset = jax.random.randint(key_y, (2, 1), 200, 800)
    y = (jnp.arange(config.window_samples)[None, :] >= onset).astype(jnp.float32)  # (B, T)
    batch = {"x": x, "y": y, "valid": jnp.array([True, True])}
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    optimizer = make_nnx_optimizer(model, config.train, TOTAL_STEPS)
    return config, batch, model, optimizer


def test_five_steps_lower_the_loss_and_compile_once(setup, monkeypatch):
    config, batch, model, optimizer = setup
    cfg = config.train
    schedule = learning_rate_schedule(cfg, TOTAL_STEPS)  # W = 2
    monkeypatch.setattr(step_module, "compute_loss", counting_loss)
    history = []
    for step in range(5):
        metrics = jax.device_get(train_step(model, optimizer, batch, cfg, 1.3868))
        history.append(metrics)
        assert metrics["finite"] and all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm", "lr"))
        assert metrics["lr"] == pytest.approx(float(schedule(step)), rel=1e-6)
    losses = [float(m["loss"]) for m in history]
    print(f"loss per step (dropout on): {np.round(losses, 5)}")
    assert losses[-1] < 0.98 * losses[0]
    assert int(optimizer.step[...]) == 5
    # A new pos_weight and another valid mask are traced values: no recompile.
    train_step(model, optimizer, dict(batch, valid=jnp.array([True, False])), cfg, 2.0)
    assert len(TRACES) == 1


def test_valid_mask_excludes_a_padded_window(setup):
    """With window 1 marked padding, what it holds (signal, labels) does not reach the gradient."""
    config, batch, model, _ = setup
    model = nnx.view(model, deterministic=True)
    valid = jnp.array([True, False])

    @nnx.jit
    def grads_of(model, x, y):
        def loss(m):
            return compute_loss(m(x)[0], y, config.train, 1.0, valid)

        return nnx.grad(loss)(model)

    first = grads_of(model, batch["x"], batch["y"])
    other_x = batch["x"].at[1].set(jax.random.normal(jax.random.key(7), batch["x"].shape[1:]) * 5)
    second = grads_of(model, other_x, batch["y"].at[1].set(1.0 - batch["y"][1]))
    worst = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(first))
    print(f"gradient change from the padded window's content: max |Δ| = {worst:.2e} (max |g| {scale:.2e})")
    assert scale > 0 and worst <= 1e-6 * scale


def test_eval_step(setup):
    config, batch, model, _ = setup
    probs = eval_step(model, batch["x"])
    assert probs.shape == batch["y"].shape
    assert bool(jnp.all((probs > 0) & (probs < 1)))
    np.testing.assert_array_equal(np.asarray(probs), np.asarray(eval_step(model, batch["x"])))
    assert model.tcn.dropout.deterministic is False  # the model itself stays in training mode



def test_a_non_finite_step_under_nan_policy_skip_changes_nothing(setup, monkeypatch):
    """The loop counts a step as skipped when its loss or gradient norm is not finite. Under
    `skip` the step keeps parameters and optimizer state exactly (torchref never calls its
    optimizer then). optax.apply_if_finite, used before, tested the gradient's entries only: a
    loss scaled by 1e25 gives finite entries whose norm overflows, and that update was applied
    (clipped to zero, yet weight decay, the moments' decay and the step count went on). The loss
    is scaled by the traced pos_weight argument here: one compilation for every case."""
    config, batch, _, _ = setup
    cfg = dataclasses.replace(config.train, nan_policy="skip")
    model = SeizureDetector(config.model, rngs=nnx.Rngs(1))
    optimizer = make_nnx_optimizer(model, cfg, TOTAL_STEPS)
    graphdef, state = nnx.split((model, optimizer))

    def scaled_loss(logits, y, cfg, scale, valid=None):
        return compute_loss(logits, y, cfg, 1.0, valid) * scale

    monkeypatch.setattr(step_module, "compute_loss", scaled_loss)
    step = step_module.make_train_step(graphdef, cfg)

    def values(state):
        model, optimizer = nnx.merge(graphdef, state)
        return [np.asarray(x) for x in jax.tree.leaves((nnx.state(model, nnx.Param), nnx.state(optimizer)))]

    start = values(state)
    for scale in (1e25, np.nan, 1.0):
        new_state, metrics = step(state, batch, jnp.float32(scale))
        changed = any(not np.array_equal(a, b) for a, b in zip(start, values(new_state), strict=True))
        print(f"loss x {scale}: loss {float(metrics['loss']):.3g}, grad norm {float(metrics['grad_norm']):.3g}")
        assert bool(metrics["finite"]) == changed == (scale == 1.0), scale
        assert int(nnx.merge(graphdef, new_state)[1].step[...]) == (scale == 1.0)
    # the first case is the one meant: every gradient entry finite, the norm not
    grads = nnx.jit(nnx.grad(lambda m: scaled_loss(m(batch["x"])[0], batch["y"], cfg, 1e25)))(model)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert not np.isfinite(float(optax.tree.norm(grads)))
