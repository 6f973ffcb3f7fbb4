"""common/eval/report.py: what evaluate writes about detections that long_events: drop leaves out."""

import numpy as np

from common.config import load_config
from common.eval import plots
from common.eval.recordings import Trace
from common.eval.report import evaluate_traces


def test_dropped_long_detections_are_listed_titled_and_cost_false_alarms(tmp_path, monkeypatch):
    """At 1 Hz with the default 600 s maximum: a 700 s detection over background is dropped from
    the events; metrics.json lists it, its timeline's title says so, and the sweep counts it as a
    false alarm at the configured threshold while NEDC, reading the written events, does not."""
    config = load_config("configs/default.yaml", ["postprocess.tau_on=0.5", "postprocess.tau_off=0.5",
                                                  "postprocess.opening_samples=1", "postprocess.closing_samples=1"])
    seizure = np.zeros(3600, np.float32)
    labels = np.zeros(3600, np.uint8)
    seizure[1000:1100] = 0.9
    labels[1000:1100] = 1
    background = np.zeros(3600, np.float32)
    background[2000:2700] = 0.9
    traces = [Trace("s_s001_t000", seizure, labels, 1.0), Trace("b_s001_t000", background, np.zeros(3600, np.uint8), 1.0)]
    titles = []
    monkeypatch.setattr(plots, "plot_example", lambda *args: titles.append(args[-1]))
    metrics = evaluate_traces(traces, config, tmp_path)
    assert metrics["dropped_long_events"] == {"b_s001_t000": [[2000.0, 2700.0]]}
    assert "b_s001_t000: 0 of 0 seizures hit, 0 false alarms (OVLP); 1 detection(s) over 600 s dropped" in titles
    assert "s_s001_t000: 1 of 1 seizures hit, 0 false alarms (OVLP)" in titles
    assert metrics["nedc"]["ovlp"]["seiz"]["false_alarms"] == 0  # the written events hold it no more
    sweep = metrics["threshold_sweep"]
    at = sweep["tau_on"].index(0.5)
    assert (sweep["hits"][at], sweep["false_alarms"][at]) == (1, 1)
