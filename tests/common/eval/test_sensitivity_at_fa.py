import dataclasses

import numpy as np
import pytest

from common.config import PostprocessConfig
from common.data.csv_bi import CsvBi, Event
from common.eval.nedc import score_ovlp
from common.eval.postprocess import runs
from common.eval.recordings import Trace
from common.eval.sensitivity_at_fa import (
    FA_RATE_METRICS,
    OperatingPoint,
    metric_name,
    ovlp_counts,
    sensitivity_at_fa,
    shown_threshold,
    sweep,
    swept_config,
    threshold_grid,
)

HALF_DAY = 43200  # samples at 1 Hz: two recordings make 24 h, so FA/24h = the false-alarm count
# Plain two-threshold hysteresis with tau_off = tau_on, no morphology, no duration limit, no merge:
# every plateau at or above tau_on is one event.
PLAIN = PostprocessConfig(tau_on=0.5, tau_off=0.5, opening_samples=1, closing_samples=1,
                          min_duration_seconds=0.0, max_duration_seconds=1e6, merge_gap_seconds=0.0)


def plateaus(n, *spans):
    """(probs, labels): probability plateaus (start, stop, level, is_seizure) on zeros."""
    probs, labels = np.zeros(n), np.zeros(n, np.uint8)
    for start, stop, level, seizure in spans:
        probs[start:stop] = level
        labels[start:stop] = seizure
    return probs, labels


def hand_built() -> list[Trace]:
    """Seizure peaks 0.92, 0.47, 0.67 and one the model misses (0.0); false-alarm bumps peaking
    at 0.97 (x1), 0.72 (x2), 0.57 (x3) and 0.32 (x10). Levels sit between grid points."""
    a = plateaus(HALF_DAY, (1000, 1100, 0.92, 1), (5000, 5100, 0.47, 1), (9000, 9100, 0.0, 1),
                 (20000, 20010, 0.97, 0), (30000, 30010, 0.72, 0), (31000, 31010, 0.72, 0))
    b = plateaus(HALF_DAY, (2000, 2100, 0.67, 1),
                 *[(3000 + 100 * i, 3010 + 100 * i, 0.57, 0) for i in range(3)],
                 *[(10000 + 100 * i, 10010 + 100 * i, 0.32, 0) for i in range(10)])
    return [Trace("a", *a, 1.0), Trace("b", *b, 1.0)]


def test_sweep_counts_hits_and_false_alarms_at_every_threshold():
    result = sweep(hand_built(), PLAIN, steps=19)  # tau_on = 0.05, 0.10, ..., 0.95, 0.999, ..., 0.9999999
    tau = np.concatenate([np.arange(1, 20) / 20, 1 - 10.0 ** -np.arange(3, 8)])
    np.testing.assert_allclose(result.tau_on, tau)
    np.testing.assert_allclose(result.tau_off, tau)  # the configured ratio 1
    seizure_peaks, bump_peaks = [0.92, 0.47, 0.67], [0.97] + [0.72] * 2 + [0.57] * 3 + [0.32] * 10
    expected_hits = [sum(p >= t for p in seizure_peaks) for t in tau]
    expected_false_alarms = [sum(p >= t for p in bump_peaks) for t in tau]
    assert result.hits.tolist() == expected_hits
    assert result.false_alarms.tolist() == expected_false_alarms
    assert (result.targets, result.duration_seconds) == (4, 86400.0)


def test_sensitivity_at_each_fa_target_is_the_best_under_it():
    points = sensitivity_at_fa(sweep(hand_built(), PLAIN, steps=19), (10.0, 5.0, 2.5, 1.0, 0.5))
    summary = {name: (p.met, p.sensitivity, round(p.fa_per_24h, 9), p.hits, p.false_alarms,
                      None if p.tau_on is None else round(p.tau_on, 9))
               for name, p in points.items()}
    assert summary == {
        # FA <= 10: tau 0.35-0.45 hit 3 of 4 with 6 false alarms; the highest tau wins the tie
        "sensitivity_at_10_fa_per_24h": (True, 0.75, 6.0, 3, 6, 0.45),
        "sensitivity_at_5_fa_per_24h": (True, 0.5, 3.0, 2, 3, 0.65),
        "sensitivity_at_2.5_fa_per_24h": (True, 0.25, 1.0, 1, 1, 0.9),
        "sensitivity_at_1_fa_per_24h": (True, 0.25, 1.0, 1, 1, 0.9),
        # the 0.97 bump fires at every threshold of the grid k/20; the tail's, above every peak,
        # fire nothing (the empty detector meets any target, and does not count as meeting it)
        "sensitivity_at_0.5_fa_per_24h": (False, 0.0, 0.0, 0, 0, None),
    }


def test_the_sweep_post_processes_as_configured():
    # min 20 s events: the 10 s bumps no longer count, the 100 s seizures still do
    cfg = PostprocessConfig(tau_on=0.86, tau_off=0.43, opening_samples=1, closing_samples=1,
                            min_duration_seconds=20.0, max_duration_seconds=1e6, merge_gap_seconds=0.0)
    result = sweep(hand_built(), cfg, steps=19)
    assert result.false_alarms.tolist() == [0] * 24
    np.testing.assert_allclose(result.tau_off, result.tau_on / 2)
    assert sensitivity_at_fa(result, (1.0,))["sensitivity_at_1_fa_per_24h"].sensitivity == 0.75
    assert swept_config(cfg, 0.5).tau_off == 0.25 and swept_config(cfg, 0.5).min_duration_seconds == 20.0


def _record(name, mask):
    starts, stops = runs(mask)
    events = tuple(Event(float(a), float(b), "seiz") for a, b in zip(starts, stops, strict=True))
    return CsvBi(name, float(mask.size), events)


def test_ovlp_counts_agree_with_the_nedc_scorer():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        ref = rng.random(n) < rng.uniform(0.05, 0.6)
        hyp = rng.random(n) < rng.uniform(0.05, 0.6)
        seiz = score_ovlp([(_record(f"{trial}.csv_bi", ref), _record(f"{trial}.csv_bi", hyp))]).seiz
        assert ovlp_counts(*runs(ref), *runs(hyp)) == (seiz["hits"], seiz["false_alarms"])


def test_metric_names_are_fixed_strings():
    assert [metric_name(r) for r in (10.0, 5.0, 2.5, 1.0)] == [
        "sensitivity_at_10_fa_per_24h", "sensitivity_at_5_fa_per_24h",
        "sensitivity_at_2.5_fa_per_24h", "sensitivity_at_1_fa_per_24h"]
    assert metric_name(10) == FA_RATE_METRICS[10.0]  # 10 and 10.0 are one key
    with pytest.raises(ValueError, match="eval.fa_rates holds 3, which has no metric name"):
        metric_name(3.0)


def test_grid_and_inputs():
    tail = [0.999, 0.9999, 0.99999, 0.999999, 0.9999999]
    np.testing.assert_allclose(threshold_grid(3), [0.25, 0.5, 0.75, *tail], rtol=0, atol=1e-15)
    np.testing.assert_allclose(threshold_grid(999)[-6:], [998 / 1000, 999 / 1000, *tail[1:]], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="threshold_steps"):
        threshold_grid(0)
    probs, labels = plateaus(100, (10, 20, 0.9, 0))
    with pytest.raises(ValueError, match="hold no seizure"):
        sweep([Trace("x", probs, labels, 1.0)], PLAIN, steps=9)


def test_the_sweep_counts_a_split_event_as_the_scorer_does():
    """A 1200 s detection over a 100 s seizure, split (postprocess.long_events) into two 600 s
    events in the written files: NEDC joins touching events of a label, so it scores one hit and
    no false alarm, and the sweep (a review's: it had counted the second piece as a false alarm)
    counts the same at that threshold."""
    from common.eval.postprocess import postprocess

    probs, labels = plateaus(HALF_DAY, (100, 1300, 0.9, 0), (150, 250, 0.9, 1))
    cfg = PostprocessConfig(tau_on=0.5, tau_off=0.5, opening_samples=1, closing_samples=1, min_duration_seconds=0.0,
                            max_duration_seconds=600.0, merge_gap_seconds=0.0, long_events="split")
    _, events = postprocess(probs, 1.0, cfg)
    assert [(e.start_seconds, e.stop_seconds) for e in events] == [(100.0, 700.0), (700.0, 1300.0)]
    written = CsvBi("r.csv_bi", float(HALF_DAY), tuple(events))
    seiz = score_ovlp([(_record("r.csv_bi", labels.astype(bool)), written)]).seiz
    assert (seiz["hits"], seiz["false_alarms"]) == (1, 0)
    result = sweep([Trace("r", probs, labels, 1.0)], cfg, steps=19)
    assert (result.hits[9], result.false_alarms[9]) == (1, 0)  # tau_on 0.5


def test_a_dropped_long_run_hits_nothing_but_is_a_false_alarm_off_the_seizures():
    """long_events: drop (the default) with a 600 s maximum, two 1 h recordings at 1 Hz: one holds
    a 100 s seizure scored 0.5, the other is background scored 0.6 throughout. At tau_on 0.5 the
    background is one 3600 s run: dropped from the events, it was counted as nothing, and the
    sweep gave sensitivity 1 at 0 FA/24h to a detector that fired for the whole hour (a review's
    repro). It is a false alarm: 1 in 2 h, 12 FA/24h. A long run over the seizure hits nothing."""
    hour = 3600
    seizure = plateaus(hour, (1000, 1100, 0.5, 1))
    background = (np.full(hour, 0.6), np.zeros(hour, np.uint8))
    cfg = dataclasses.replace(PLAIN, max_duration_seconds=600.0)
    assert cfg.long_events == "drop"
    result = sweep([Trace("s", *seizure, 1.0), Trace("b", *background, 1.0)], cfg, steps=9)  # 0.1 .. 0.9
    # tau 0.1-0.5: the seizure's 100 s run hits and the background's 3600 s run is a false alarm;
    # 0.6: the background run alone; above: nothing
    assert result.hits.tolist()[:9] == [1] * 5 + [0] * 4
    assert result.false_alarms.tolist()[:9] == [1] * 6 + [0] * 3
    point = sensitivity_at_fa(result, (1.0,))["sensitivity_at_1_fa_per_24h"]
    assert (point.met, point.sensitivity, point.fa_per_24h) == (False, 0.0, 0.0)  # not 1.0 at 0 FA
    assert sensitivity_at_fa(result, (20.0,))["sensitivity_at_20_fa_per_24h"].sensitivity == 1.0  # 12 FA/24h

    over = plateaus(hour, (1000, 1100, 0.5, 1))[1], np.full(hour, 0.7)  # labels, probs
    alone = sweep([Trace("o", over[1], over[0], 1.0)], cfg, steps=9)
    assert alone.hits.sum() == alone.false_alarms.sum() == 0  # one 3600 s run over the seizure, at every tau
    kept = sweep([Trace("o", over[1], over[0], 1.0)], dataclasses.replace(cfg, long_events="keep"), steps=9)
    assert kept.hits.tolist()[:9] == [1] * 7 + [0] * 2 and kept.false_alarms.sum() == 0  # NEDC's reading


def test_saturated_outputs_find_an_operating_point_above_099():
    """Artefacts at 0.995 and a seizure at 0.9995 in 12 h: the grid k / 100 ends at 0.99, where
    the three artefacts give 6 FA/24h; 0.999 of the tail leaves the seizure alone."""
    probs, labels = plateaus(HALF_DAY, (1000, 1100, 0.9995, 1),
                             *[(5000 + 1000 * i, 5020 + 1000 * i, 0.995, 0) for i in range(3)])
    point = sensitivity_at_fa(sweep([Trace("r", probs, labels, 1.0)], PLAIN, steps=99), (5.0,))
    assert (point["sensitivity_at_5_fa_per_24h"].sensitivity, point["sensitivity_at_5_fa_per_24h"].tau_on) == (1.0, 0.999)
    # an artefact at exactly 1 fires at every threshold: no swept one meets 1 FA/24h (2 FA/24h
    # here), and the operating point says so, with the empty detector's 0
    probs[20000:20010] = 1.0
    point = sensitivity_at_fa(sweep([Trace("r", probs, labels, 1.0)], PLAIN, steps=99), (1.0,))
    assert point["sensitivity_at_1_fa_per_24h"] == OperatingPoint(1.0, False, 0.0, 0.0, 0, 0, 1, None, None)


def test_thresholds_are_shown_apart_near_1():
    shown = [shown_threshold(t) for t in threshold_grid(99)[-6:]]
    assert shown == ["0.9900", "0.9990", "0.9999", "0.99999", "0.999999", "0.9999999"]
    assert [shown_threshold(t) for t in (0.82 * 0.75, 1 / 3, 0.999 * 0.75)] == ["0.6150", "0.3333", "0.74925"]


def test_the_sweep_counts_what_post_processing_at_each_threshold_gives():
    """Every threshold of the grid, its tail included, against postprocess_mask run at it, on
    float32 traces as evaluation stitches them, with plateaus at the tail's float32 values
    (0.99999988 = sigmoid(16), which hysteresis finds >= 0.9999999 in float32) and runs longer
    than the maximum (dropped: false alarms off the seizures, never hits)."""
    from common.eval.postprocess import postprocess_mask

    rng = np.random.default_rng(3)
    cfg = PostprocessConfig(tau_on=0.8, tau_off=0.6, opening_samples=3, closing_samples=5, min_duration_seconds=4.0,
                            max_duration_seconds=300.0, merge_gap_seconds=2.0)
    levels = np.array([0.3, 0.7, 0.95, 0.995, 0.9999, 1 - 1e-6, 1 / (1 + np.exp(-16.0)), 1.0], np.float32)
    traces = []
    for r in range(6):
        probs, labels = np.zeros(4000, np.float32), np.zeros(4000, np.uint8)
        for start in np.sort(rng.choice(np.arange(0, 3500, 50), 12, replace=False)):
            probs[start:start + int(rng.choice([3, 10, 40, 400]))] = rng.choice(levels)
        for start in rng.choice(np.arange(0, 3900, 100), 3, replace=False):
            labels[start:start + 60] = 1
        traces.append(Trace(f"r{r}", probs, labels, 1.0))
    result = sweep(traces, cfg, steps=19)
    for s, tau in enumerate(result.tau_on):
        hits = false_alarms = 0
        for trace in traces:
            ref = runs(trace.labels.astype(bool))
            starts, stops = runs(postprocess_mask(trace.probs, 1.0, dataclasses.replace(swept_config(cfg, tau),
                                                                                        long_events="keep")))
            short = stops - starts <= 300
            hits += ovlp_counts(*ref, starts[short], stops[short])[0]
            false_alarms += ovlp_counts(*ref, starts, stops)[1]
        assert (result.hits[s], result.false_alarms[s]) == (hits, false_alarms), tau
    assert result.hits[-1] > 0 and result.false_alarms[-1] > 0  # the sigmoid(16) and 1.0 plateaus fire at 0.9999999
