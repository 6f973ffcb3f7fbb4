"""jaxbrr.train.loss against the float64 numpy oracle of tests/common/train/loss_oracle.py:
values on hand-picked logits in every region of the clamps, gradients against central
differences of the oracle, the pos_weight rule, the valid mask (tests/torchref/train/test_loss.py
checks torchref's against the same oracle)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.config import load_config
from jaxbrr.train import loss as L
from tests.common.train.loss_oracle import (
    LOGITS,
    SIGMA_EDGE,
    bce_oracle,
    focal_oracle,
    loss_oracle,
    oracle_gradient,
)

# ---------------------------------------------------------------------------------------------


def train_cfg(**overrides):
    return load_config(None, [f"train.{k}={v}" for k, v in overrides.items()]).train


@pytest.mark.parametrize("alpha, gamma, w", [(0.5, 2.0, 1.3868), (0.25, 2.0, 1.0), (0.5, 0.0, 3.0),
                                              (0.8, 1.5, 1.0)])
def test_focal_matches_oracle_float64(x64, alpha, gamma, w):
    for y in (0.0, 1.0):
        labels = np.full_like(LOGITS, y)
        got = np.asarray(L.focal_loss(jnp.asarray(LOGITS), jnp.asarray(labels), alpha, gamma, w))
        want = focal_oracle(LOGITS, labels, alpha, gamma, w)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_focal_float32_close_to_oracle():
    """In float32 the clamp bounds 1 − 1e-6, 1 − 1e-7 round (0.99999899, 0.99999988): differences
    stay at float32 rounding of the loss's own scale."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, LOGITS.shape).astype(np.float64)
    got = np.asarray(L.focal_loss(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(labels, jnp.float32),
                                  0.5, 2.0, 1.3868), np.float64)
    want = focal_oracle(LOGITS, labels, 0.5, 2.0, 1.3868)
    diff = np.max(np.abs(got - want))
    print(f"float32 focal max |Δ| = {diff:.2e} (max loss {want.max():.1f})")
    assert diff <= 1e-6 * max(1.0, want.max())


def test_focal_cap_and_logit_clamp(x64):
    # Beyond the cap: −100.5 and −250 clamp to −100, 0.5 · 3 · 100 = 150 -> 100.
    got = L.focal_loss(jnp.array([-250.0, -100.5, -99.0]), jnp.ones(3), 0.5, 0.0, 3.0)
    assert got[0] == 100.0 and got[1] == 100.0
    assert got[2] == 100.0  # 0.5 · 3 · 99 = 148.5, still capped
    got = L.focal_loss(jnp.array([-250.0, -100.5]), jnp.ones(2), 0.5, 0.0, 1.0)
    np.testing.assert_allclose(got, [50.0, 50.0], rtol=1e-13)  # 0.5 · 100, not 125 or 50.25


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_focal_gradient_matches_central_differences(x64, y):
    """Away from the kinks (±100, ±13.8155) the gradient is the oracle's derivative; beyond
    |z| = 100 it is exactly 0. Finite everywhere."""
    alpha, gamma, w = 0.5, 2.0, 1.3868
    labels = np.full_like(LOGITS, y)
    grad = jax.grad(lambda z: jnp.sum(L.focal_loss(z, jnp.asarray(labels), alpha, gamma, w)))(
        jnp.asarray(LOGITS)
    )
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    want = oracle_gradient(lambda z: focal_oracle(z, labels, alpha, gamma, w), LOGITS)
    smooth = (np.abs(np.abs(LOGITS) - 100) > 1e-3) & (np.abs(np.abs(LOGITS) - SIGMA_EDGE) > 1e-3)
    np.testing.assert_allclose(grad[smooth], want[smooth], rtol=1e-6, atol=1e-9)
    assert np.all(grad[np.abs(LOGITS) > 100] == 0.0)


def test_bce_matches_oracle_and_has_no_clamp(x64):
    for y in (0.0, 1.0):
        labels = np.full_like(LOGITS, y)
        got = np.asarray(L.bce_with_logits(jnp.asarray(LOGITS), jnp.asarray(labels), 1.7))
        np.testing.assert_allclose(got, bce_oracle(LOGITS, labels, 1.7), rtol=1e-13)
    # No clamp: z = −250, y = 1 costs 250·w; the gradient is −w there, not 0.
    grad = jax.grad(lambda z: L.bce_with_logits(z, jnp.array(1.0), 1.7))(jnp.array(-250.0))
    assert float(grad) == pytest.approx(-1.7, rel=1e-15)


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_bce_gradient_finite_in_float32(y):
    """softplus form: no −inf from log σ at |z| ≈ 90-1e4, so no NaN gradients."""
    z = jnp.asarray(LOGITS * 40, jnp.float32)  # up to |z| = 1e4
    value, grad = jax.value_and_grad(lambda z: jnp.sum(L.bce_with_logits(z, jnp.full_like(z, y))))(z)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("kind, alpha", [("focal", 0.5), ("focal", 0.25), ("focal", 0.5000001),
                                         ("bce", 0.25)])
def test_compute_loss_pos_weight_rule(x64, kind, alpha):
    """pos_weight reaches focal only for |α − 0.5| < 1e-6; bce always uses it."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, (2, 32))
    y = (rng.random((2, 32)) < 0.4).astype(np.float64)
    cfg = train_cfg(loss=kind, focal_alpha=alpha, focal_gamma=2.0)
    got = float(L.compute_loss(jnp.asarray(z), jnp.asarray(y), cfg, 2.0))
    assert got == pytest.approx(loss_oracle(z, y, kind, alpha, 2.0, 2.0), rel=1e-13)
    ignored = float(L.compute_loss(jnp.asarray(z), jnp.asarray(y), cfg, 1.0))
    uses_weight = kind == "bce" or abs(alpha - 0.5) < 1e-6
    assert (got != ignored) == uses_weight


def test_valid_mask_excludes_padding(x64):
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, (3, 16))
    y = (rng.random((3, 16)) < 0.5).astype(np.float64)
    z[2] = 1e4  # padding with a huge logit and a wrong label: it must not count
    y[2] = 0.0
    valid = np.array([True, True, False])
    cfg = train_cfg(loss="focal", focal_alpha=0.5)

    def loss(z):
        return L.compute_loss(z, jnp.asarray(y), cfg, 1.3868, jnp.asarray(valid))

    value, grad = jax.value_and_grad(loss)(jnp.asarray(z))
    assert float(value) == pytest.approx(loss_oracle(z, y, "focal", 0.5, 2.0, 1.3868, valid), rel=1e-13)
    assert float(value) == pytest.approx(float(L.compute_loss(jnp.asarray(z[:2]), jnp.asarray(y[:2]),
                                                              cfg, 1.3868)), rel=1e-14)
    grad = np.asarray(grad)
    assert np.all(grad[2] == 0.0) and np.all(np.isfinite(grad))
    # No valid window at all: 0, not 0/0.
    none = L.compute_loss(jnp.asarray(z), jnp.asarray(y), cfg, 1.0, jnp.zeros(3, bool))
    assert float(none) == 0.0
    # a left-out window's NaN labels (a window the user masks because its labels are bad) change
    # neither the loss nor any gradient; they made every gradient NaN (0 · NaN in the backward)
    y_nan = y.copy()
    y_nan[2] = np.nan
    for kind in ("focal", "bce"):
        kind_cfg = train_cfg(loss=kind, focal_alpha=0.5)
        (v0, g0), (v1, g1) = [
            jax.value_and_grad(L.compute_loss)(jnp.asarray(z), jnp.asarray(labels), kind_cfg, 1.3868, jnp.asarray(valid))
            for labels in (y, y_nan)]
        assert float(v1) == float(v0) and np.array_equal(np.asarray(g1), np.asarray(g0)), kind


def test_compute_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        L.compute_loss(jnp.zeros((2, 8)), jnp.zeros((2, 1, 8)), train_cfg())
