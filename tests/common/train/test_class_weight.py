"""The loss oracle on values computed by hand, and common/train/class_weight.py's pos_weight rule
(the original's §9)."""

from __future__ import annotations

import math

import pytest

from common.config import load_config
from common.train import class_weight as CW
from tests.common.train.loss_oracle import focal_oracle


def train_cfg(**overrides):
    return load_config(None, [f"train.{k}={v}" for k, v in overrides.items()]).train


def test_oracle_on_hand_computed_values():
    # z = 0, y = 1: bce = log 2, p_t = 1/2 -> 0.5 · 0.25 · log 2.
    assert focal_oracle(0.0, 1.0, 0.5, 2.0) == pytest.approx(0.125 * math.log(2), rel=1e-15)
    # z = 250, y = 0: z' = 100, bce = softplus(100) = 100 (+ 4e-44), p_t = 1e-6.
    assert focal_oracle(250.0, 0.0, 0.5, 2.0) == pytest.approx(0.5 * (1 - 1e-6) ** 2 * 100, rel=1e-15)
    # z = −250, y = 1, w = 3, γ = 0: 0.5 · 3 · 100 = 150, capped at 100.
    assert focal_oracle(-250.0, 1.0, 0.5, 0.0, 3.0) == 100.0


def test_pos_weight_from_ratio():
    assert CW.pos_weight_from_ratio(0.3421) == pytest.approx(1.3868, abs=5e-5)  # original §9
    assert CW.pos_weight_from_ratio(0.1) == pytest.approx(3.0, rel=1e-15)
    assert CW.pos_weight_from_ratio(0.2) == pytest.approx(2.0, rel=1e-15)
    for ratio in (0.0, 0.5, 0.7, 1.0, -0.1):
        assert CW.pos_weight_from_ratio(ratio) == 1.0


def test_resolve_pos_weight():
    assert CW.resolve_pos_weight(train_cfg(pos_weight=2.5), None) == 2.5
    assert CW.resolve_pos_weight(train_cfg(), 0.2) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="pos_weight"):
        CW.resolve_pos_weight(train_cfg(), None)
