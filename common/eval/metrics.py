"""Sample-level metrics on concatenated per-recording traces: one score and one label per sample.

Glossary
    n        samples: every recording's stitched trace, concatenated (each sample once, not once
             per overlapping window as the original's flattened windows, spec §8 item 5)
    P, N     samples labelled seizure (1) / background (0)
    TP, FP, TN, FN   counts at a threshold; a sample is predicted seizure when score >= threshold

    AUROC       = (R₊ − P(P + 1)/2) / (P · N)
                  Mann–Whitney U over P · N: R₊ is the sum of the positives' ranks among all n
                  scores, ties given their average rank, so a tied positive/negative pair counts ½
                  (the area under the ROC step curve, as sklearn's roc_auc_score)
    sensitivity = TP / P            specificity = TN / N
    precision   = TP / (TP + FP),   0 when nothing is predicted (the original's convention, spec §4.8)
    f1          = 2 TP / (2 TP + FP + FN)

"spec" is ../shared/reference/original_spec.md. Metric names are fixed strings (SAMPLE_METRICS),
never built from formatted numbers: the original's `sensitivity_at_10.0fa` vs `_10fa` mismatch
silently broke its early stopping (spec §8 item 2).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from common.shown import shown_inline

SAMPLE_METRICS: tuple[str, ...] = (
    "auroc", "sensitivity", "specificity", "precision", "f1", "positives", "samples",
)


def _scores_and_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 scores and bool labels, checked: same shape, finite, labels 0/1, both present."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    scores, labels = scores.ravel().astype(np.float64), labels.ravel()
    non_finite = int(np.count_nonzero(~np.isfinite(scores)))
    if non_finite:
        raise ValueError(f"{non_finite} of {scores.size} scores are not finite (NaN or inf)")
    if labels.dtype != np.bool_:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be 0/1, got values {shown_inline(np.unique(labels).tolist())}")
        labels = labels.astype(bool)
    positives = int(labels.sum())
    if positives in (0, labels.size):
        raise ValueError(
            f"labels hold one class only ({positives} positives of {labels.size} samples); "
            f"AUROC, sensitivity and specificity need both"
        )
    return scores, labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve, ties counted half (module docstring)."""
    return _mann_whitney_auroc(*_scores_and_labels(scores, labels))


def _mann_whitney_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    positives = int(labels.sum())
    negatives = labels.size - positives
    ranks = rankdata(scores)  # (n,) 1-based, ties averaged
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def mask_metrics(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Sensitivity, specificity, precision and F1 of a 0/1 prediction (e.g. a post-processed
    mask) against 0/1 labels; precision is 0 when nothing is predicted (original §4.8)."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ in shape")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"labels hold one class only ({positives} positives of {labels.size}): "
                         "sensitivity and specificity are undefined")
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn, tn = positives - tp, negatives - fp
    return {
        "sensitivity": tp / positives,
        "specificity": tn / negatives,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


def sample_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """The SAMPLE_METRICS of one score/label set; 'positives' and 'samples' are int counts.

    Raises ValueError on one-class labels (sensitivity or specificity would be undefined).
    """
    probs, labels = _scores_and_labels(probs, labels)
    return {
        "auroc": _mann_whitney_auroc(probs, labels),
        **mask_metrics(probs >= threshold, labels),
        "positives": int(labels.sum()),
        "samples": int(labels.size),
    }


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score from the highest down, after (0, 0)
    at threshold +inf: a sample is positive when score >= threshold. The trapezoidal area under
    it equals `auroc` (ties give the diagonal step, counted ½)."""
    scores, labels = _scores_and_labels(scores, labels)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.flatnonzero(np.diff(scores) != 0)  # (K - 1,) last index of each distinct score
    last = np.append(last, scores.size - 1)  # (K,)
    tp = np.cumsum(labels)[last]  # (K,)
    fp = (last + 1) - tp
    positives = int(labels.sum())
    negatives = labels.size - positives
    fpr = np.concatenate([[0.0], fp / negatives])
    tpr = np.concatenate([[0.0], tp / positives])
    return fpr, tpr, np.concatenate([[np.inf], scores[last]])
