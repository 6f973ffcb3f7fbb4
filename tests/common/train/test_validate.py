"""Validation metrics: sensitivity at FA/24h as an early-stopping metric (the original's choice)."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import ConfigError, load_config
from common.eval.recordings import Trace
from common.train.validate import check_metric_name, score

SFREQ = 16.0


def _trace(stem: str, seizure: tuple[float, float] | None, false_alarm: tuple[float, float] | None,
           seconds: float = 3600.0) -> Trace:
    """An hour at 16 Hz: probability 0.95 over the seizure and the false alarm, 0.05 elsewhere."""
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    labels = np.zeros(t.shape, np.uint8)
    probs = np.full(t.shape, 0.05, np.float32)
    if seizure:
        labels[(t >= seizure[0]) & (t < seizure[1])] = 1
        probs[(t >= seizure[0]) & (t < seizure[1])] = 0.95
    if false_alarm:
        probs[(t >= false_alarm[0]) & (t < false_alarm[1])] = 0.95
    return Trace(stem, probs, labels, SFREQ)


def test_sensitivity_at_fa_is_a_validation_metric_when_early_stopping_asks_for_it():
    config = load_config("configs/tiny.yaml", ["train.early_stopping.metric=sensitivity_at_10_fa_per_24h",
                                               "eval.fa_rates=[10.0, 1.0]"])
    check_metric_name(config)
    check_metric_name(load_config("configs/tusz.yaml"))  # the original's metric, under its canonical name
    # 2 hours, 2 seizures, both detected, 1 false alarm: 12 FA/24h at every threshold below 0.95
    traces = [_trace("a", (600, 660), (1800, 1860)), _trace("b", (900, 960), None)]
    metrics, _ = score(traces, config)
    assert metrics["sensitivity_at_10_fa_per_24h"] == 0.0  # no threshold keeps FA/24h <= 10
    assert metrics["sensitivity_at_1_fa_per_24h"] == 0.0
    metrics, _ = score([traces[1], _trace("c", (300, 400), None)], config)  # no false alarm at all
    assert metrics["sensitivity_at_10_fa_per_24h"] == metrics["sensitivity_at_1_fa_per_24h"] == 1.0
    assert "sensitivity_at_10_fa_per_24h" not in score(traces, load_config("configs/tiny.yaml"))[0]  # on demand


def test_an_fa_metric_outside_fa_rates_is_refused():
    config = load_config("configs/tiny.yaml", ["train.early_stopping.metric=sensitivity_at_2_fa_per_24h",
                                               "eval.fa_rates=[10.0]"])
    with pytest.raises(ConfigError, match="sensitivity_at_10_fa_per_24h"):
        check_metric_name(config)
