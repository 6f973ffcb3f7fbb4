"""torchref.train.loss against the float64 numpy oracle of tests/common/train/loss_oracle.py (written
from original_spec.md §3.4): values in every clamp region, gradients, the pos_weight rule,
the valid mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import load_config
from tests.common.train.loss_oracle import (
    LOGITS,
    SIGMA_EDGE,
    bce_oracle,
    focal_oracle,
    loss_oracle,
    oracle_gradient,
)
from torchref.train import loss as L

# torch's BCEWithLogits computes (1−y)·z + (1 + (w−1)y)·(log1p(e^−|z|) + max(−z, 0)): for a
# confident correct logit the two terms cancel, so a true value below ~eps·|z| (1e-56 at z = −100,
# y = 0) comes out as 0. An absolute error of at most eps·100, float64.
BCE_CANCELLATION = 1e-13


def train_cfg(**overrides):
    return load_config(None, [f"train.{k}={v}" for k, v in overrides.items()]).train


def t64(x):
    return torch.as_tensor(np.asarray(x, np.float64))


@pytest.mark.parametrize("alpha, gamma, w", [(0.5, 2.0, 1.3868), (0.25, 2.0, 1.0), (0.5, 0.0, 3.0),
                                              (0.8, 1.5, 1.0)])
def test_focal_matches_oracle_float64(alpha, gamma, w):
    for y in (0.0, 1.0):
        labels = np.full_like(LOGITS, y)
        got = L.focal_loss(t64(LOGITS), t64(labels), alpha, gamma, w)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), focal_oracle(LOGITS, labels, alpha, gamma, w),
                                   rtol=1e-13, atol=BCE_CANCELLATION)


def test_focal_float32_close_to_oracle():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, LOGITS.shape).astype(np.float64)
    got = L.focal_loss(t64(LOGITS).float(), t64(labels).float(), 0.5, 2.0, 1.3868).double().numpy()
    want = focal_oracle(LOGITS, labels, 0.5, 2.0, 1.3868)
    diff = np.max(np.abs(got - want))
    print(f"float32 focal max |Δ| = {diff:.2e} (max loss {want.max():.1f})")
    assert diff <= 1e-6 * max(1.0, want.max())


def test_focal_cap_and_logit_clamp():
    got = L.focal_loss(t64([-250.0, -100.5, -99.0]), torch.ones(3, dtype=torch.float64), 0.5, 0.0, 3.0)
    assert got.tolist() == [100.0, 100.0, 100.0]
    got = L.focal_loss(t64([-250.0, -100.5]), torch.ones(2, dtype=torch.float64), 0.5, 0.0, 1.0)
    np.testing.assert_allclose(got.numpy(), [50.0, 50.0], rtol=1e-13)


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_focal_gradient_matches_central_differences(y):
    alpha, gamma, w = 0.5, 2.0, 1.3868
    labels = np.full_like(LOGITS, y)
    z = t64(LOGITS).requires_grad_(True)
    L.focal_loss(z, t64(labels), alpha, gamma, w).sum().backward()
    grad = z.grad.numpy()
    assert np.all(np.isfinite(grad))
    want = oracle_gradient(lambda z: focal_oracle(z, labels, alpha, gamma, w), LOGITS)
    smooth = (np.abs(np.abs(LOGITS) - 100) > 1e-3) & (np.abs(np.abs(LOGITS) - SIGMA_EDGE) > 1e-3)
    np.testing.assert_allclose(grad[smooth], want[smooth], rtol=1e-6, atol=1e-9)
    assert np.all(grad[np.abs(LOGITS) > 100] == 0.0)


def test_bce_matches_oracle():
    for y in (0.0, 1.0):
        labels = np.full_like(LOGITS, y)
        got = L.bce_with_logits(t64(LOGITS), t64(labels), 1.7).numpy()
        np.testing.assert_allclose(got, bce_oracle(LOGITS, labels, 1.7), rtol=1e-13, atol=BCE_CANCELLATION)


@pytest.mark.parametrize("kind, alpha", [("focal", 0.5), ("focal", 0.25), ("focal", 0.5000001),
                                         ("bce", 0.25)])
def test_compute_loss_pos_weight_rule(kind, alpha):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, (2, 32))
    y = (rng.random((2, 32)) < 0.4).astype(np.float64)
    cfg = train_cfg(loss=kind, focal_alpha=alpha, focal_gamma=2.0)
    got = float(L.compute_loss(t64(z), t64(y), cfg, 2.0))
    assert got == pytest.approx(loss_oracle(z, y, kind, alpha, 2.0, 2.0), rel=1e-13)
    ignored = float(L.compute_loss(t64(z), t64(y), cfg, 1.0))
    uses_weight = kind == "bce" or abs(alpha - 0.5) < 1e-6
    assert (got != ignored) == uses_weight


def test_valid_mask_excludes_padding():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, (3, 16))
    y = (rng.random((3, 16)) < 0.5).astype(np.float64)
    z[2] = 1e4
    y[2] = 0.0
    valid = np.array([True, True, False])
    cfg = train_cfg(loss="focal", focal_alpha=0.5)
    logits = t64(z).requires_grad_(True)
    value = L.compute_loss(logits, t64(y), cfg, 1.3868, torch.as_tensor(valid))
    value.backward()
    assert value.item() == pytest.approx(loss_oracle(z, y, "focal", 0.5, 2.0, 1.3868, valid), rel=1e-13)
    assert torch.all(logits.grad[2] == 0.0) and torch.all(torch.isfinite(logits.grad))
    none = L.compute_loss(t64(z), t64(y), cfg, 1.0, torch.zeros(3, dtype=torch.bool))
    assert float(none) == 0.0
    # a left-out window's NaN labels change neither the loss nor any gradient (they made every one NaN)
    y_nan = y.copy()
    y_nan[2] = np.nan
    for kind in ("focal", "bce"):
        kind_cfg = train_cfg(loss=kind, focal_alpha=0.5)
        results = []
        for labels in (y, y_nan):
            logits = t64(z).requires_grad_(True)
            value = L.compute_loss(logits, t64(labels), kind_cfg, 1.3868, torch.as_tensor(valid))
            value.backward()
            results.append((value.item(), logits.grad))
        assert results[1][0] == results[0][0] and torch.equal(results[1][1], results[0][1]), kind
