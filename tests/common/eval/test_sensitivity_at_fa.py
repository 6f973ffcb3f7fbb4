import numpy as np
import pytest

from common.config import PostprocessConfig
from common.data.csv_bi import CsvBi, Event
from common.eval.nedc import score_ovlp
from common.eval.postprocess import runs
from common.eval.recordings import Trace
from common.eval.sensitivity_at_fa import (
    FA_RATE_METRICS,
    metric_name,
    ovlp_counts,
    sensitivity_at_fa,
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
    result = sweep(hand_built(), PLAIN, steps=19)  # tau_on = 0.05, 0.10, ..., 0.95
    tau = np.arange(1, 20) / 20
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
        # the 0.97 bump fires at every threshold: only the empty detector has no false alarm
        "sensitivity_at_0.5_fa_per_24h": (False, 0.0, 0.0, 0, 0, None),
    }


def test_the_sweep_post_processes_as_configured():
    # min 20 s events: the 10 s bumps no longer count, the 100 s seizures still do
    cfg = PostprocessConfig(tau_on=0.86, tau_off=0.43, opening_samples=1, closing_samples=1,
                            min_duration_seconds=20.0, max_duration_seconds=1e6, merge_gap_seconds=0.0)
    result = sweep(hand_built(), cfg, steps=19)
    assert result.false_alarms.tolist() == [0] * 19
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
    np.testing.assert_allclose(threshold_grid(3), [0.25, 0.5, 0.75])
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
