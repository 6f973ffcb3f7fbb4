"""The focal loss's constants and the class weighting, shared by both frameworks' loss.py.

Framework-neutral (imports neither jax nor torch) so jaxbrr/train/loss.py and
torchref/train/loss.py use one definition.
"""

from __future__ import annotations

import math

from common.config import TrainConfig

# The original FocalLoss's constants (original_spec.md §3.4).
FOCAL_LOGIT_CLAMP = 100.0
FOCAL_PROB_EPS = 1e-6  # p clamped to [eps, 1 − eps]
# p_t clamped to [eps, 1 − eps] inside (1 − p_t)^γ; after the p clamp p_t is already within
# [1e-6, 1 − 1e-6], so this one never binds; kept because it is the original's formula.
FOCAL_PT_EPS = 1e-7
FOCAL_LOSS_CAP = 100.0
# pos_weight reaches the focal loss only for α = 0.5 within this tolerance.
POS_WEIGHT_ALPHA_TOL = 1e-6


def pos_weight_from_ratio(ratio: float) -> float:
    """√((1−r)/r) for a seizure ratio 0 < r < 0.5, else 1.0 (original §3.4; r = 0.3421 -> 1.3868)."""
    if 0.0 < ratio < 0.5:
        return math.sqrt((1.0 - ratio) / ratio)
    return 1.0


def resolve_pos_weight(cfg: TrainConfig, seizure_ratio: float | None) -> float:
    """`train.pos_weight`: a number as given; `auto` from the training set's window-level ratio."""
    if cfg.pos_weight != "auto":
        return float(cfg.pos_weight)
    if seizure_ratio is None:
        raise ValueError("train.pos_weight is 'auto' but no seizure ratio is known; pass the "
                         "training set's ratio or set train.pos_weight to a number")
    return pos_weight_from_ratio(seizure_ratio)


def loss_pos_weight(cfg: TrainConfig, pos_weight: float) -> float:
    """The pos_weight the configured loss actually uses: bce always; focal only when α = 0.5."""
    if cfg.loss == "focal" and abs(cfg.focal_alpha - 0.5) >= POS_WEIGHT_ALPHA_TOL:
        return 1.0
    return pos_weight
