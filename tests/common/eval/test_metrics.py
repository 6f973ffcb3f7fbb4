import numpy as np
import pytest

from common.eval.metrics import SAMPLE_METRICS, auroc, roc_curve, sample_metrics


def pairwise_auroc(scores, labels):
    """Oracle: the fraction of (positive, negative) pairs ordered correctly, ties counting half."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return (wins + 0.5 * ties) / (positives.size * negatives.size)


@pytest.mark.parametrize("seed", range(10))
def test_auroc_matches_pairwise_oracle_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(np.uint8)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6, n) / 5 + 0.1 * labels * rng.random(n)  # many ties, some signal
    assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_exact_cases():
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75  # sklearn's docstring example
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auroc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auroc(np.full(4, 0.5), labels) == 0.5
    assert auroc(np.array([0.2, 0.5, 0.5, 0.9]), labels.astype(bool)) == 0.875  # one tied pair


def test_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="one class only"):
        auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="2 of 4 scores are not finite"):
        auroc(np.array([0.1, np.nan, np.inf, 0.3]), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="0/1"):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="differ in shape"):
        auroc(np.array([0.1, 0.2]), np.array([0, 1, 1]))


def test_sample_metrics_by_hand():
    probs = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1, 0.5, 0.3])
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    # At 0.5: predicted 0.9, 0.6, 0.7, 0.5 -> TP 2, FP 2, FN 1, TN 3.
    metrics = sample_metrics(probs, labels, 0.5)
    assert tuple(metrics) == SAMPLE_METRICS
    assert metrics == {
        "auroc": pytest.approx(pairwise_auroc(probs, labels)),
        "sensitivity": pytest.approx(2 / 3),
        "specificity": pytest.approx(3 / 5),
        "precision": pytest.approx(2 / 4),
        "f1": pytest.approx(4 / 7),
        "positives": 3,
        "samples": 8,
    }
    nothing = sample_metrics(probs, labels, 0.95)
    assert (nothing["precision"], nothing["f1"], nothing["sensitivity"], nothing["specificity"]) == (0, 0, 0, 1)


def test_roc_curve_area_is_the_auroc_and_it_steps_through_every_distinct_score():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 20, 500) / 20  # many ties
    labels = rng.random(500) < 0.3 + 0.4 * scores
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert thresholds[0] == np.inf and np.all(np.diff(thresholds[1:]) < 0)
    assert len(thresholds) == len(np.unique(scores)) + 1 and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, labels), abs=1e-12)
    # at each threshold the rates count the samples with score >= threshold
    for k in (1, 7, len(thresholds) - 1):
        predicted = scores >= thresholds[k]
        assert fpr[k] == np.sum(predicted & ~labels) / np.sum(~labels)
        assert tpr[k] == np.sum(predicted & labels) / np.sum(labels)
