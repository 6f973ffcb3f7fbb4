"""The loss oracle both frameworks' loss tests check against: float64 numpy, written from the
formula in original_spec.md §3.4 (log σ through logaddexp so that ±100 are exact), and the
hand-picked logits that cross every clamp region."""

from __future__ import annotations

import math

import numpy as np

# Hand-picked logits: beyond the ±100 logit clamp, the σ clamp (|z| > log((1−1e-6)/1e-6) ≈ 13.8155),
# the p_t clamp, and the unclamped middle.
LOGITS = np.array([-250.0, -100.5, -99.0, -40.0, -14.0, -13.5, -5.0, -1.0, -1e-3, 0.0,
                   0.7, 3.0, 13.5, 14.0, 40.0, 99.0, 100.5, 250.0])
SIGMA_EDGE = math.log((1 - 1e-6) / 1e-6)  # ≈ 13.8155: beyond it σ(z) is clamped


def bce_oracle(z, y, w=1.0):
    log_sigmoid = -np.logaddexp(0.0, -z)  # log σ(z)
    log_one_minus = -np.logaddexp(0.0, z)  # log(1 − σ(z))
    return -(w * y * log_sigmoid + (1 - y) * log_one_minus)


def focal_oracle(z, y, alpha, gamma, w=1.0):
    z = np.clip(np.asarray(z, np.float64), -100.0, 100.0)
    y = np.asarray(y, np.float64)
    bce = bce_oracle(z, y, w)
    p = np.clip(1 / (1 + np.exp(-z)), 1e-6, 1 - 1e-6)
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    return np.minimum(alpha_t * (1 - np.clip(p_t, 1e-7, 1 - 1e-7)) ** gamma * bce, 100.0)


def loss_oracle(z, y, kind, alpha, gamma, w, valid=None):
    """The configured loss's mean (the pos_weight rule applied), over the valid rows."""
    if kind == "focal":
        values = focal_oracle(z, y, alpha, gamma, w if abs(alpha - 0.5) < 1e-6 else 1.0)
    else:
        values = bce_oracle(z, y, w)
    if valid is not None:
        values = values[np.asarray(valid, bool)]
    return values.mean() if values.size else 0.0


def oracle_gradient(f, z, h=1e-6):
    """Central differences of a float64 elementwise function."""
    return (f(z + h) - f(z - h)) / (2 * h)
