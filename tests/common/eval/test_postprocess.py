import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from common.config import PostprocessConfig
from common.data.csv_bi import Event
from common.eval.postprocess import (
    dropped_long_runs,
    dropped_note,
    event_spans,
    events_from_mask,
    filter_duration,
    hysteresis,
    merge_gaps,
    morphology,
    postprocess,
    runs,
    spans_to_mask,
    split_long_runs,
)

# Probability levels that hit the thresholds exactly, so ties are exercised.
LEVELS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.78, 0.8, 0.86, 0.9, 1.0)
traces = st.lists(st.sampled_from(LEVELS) | st.floats(0, 1), max_size=80)


def spans(n, *pairs):
    mask = np.zeros(n, bool)
    for start, stop in pairs:
        mask[start:stop] = True
    return mask


# ----------------------------------------------------------------------------------------------
# hysteresis


def state_machine(probs, tau_on, tau_off):
    """Oracle for min_onset = min_offset = 1: off until p >= tau_on, then on while p >= tau_off."""
    on, out = False, []
    for p in probs:
        on = p >= tau_off if on else p >= tau_on
        out.append(on)
    return np.array(out, bool)


def zone_hysteresis(probs, tau_on, tau_off, min_onset, min_offset):
    """Oracle: original_spec.md §4.1 read literally, with Python loops."""
    n = len(probs)

    def loop_runs(flags):
        found, i = [], 0
        while i < n:
            if flags[i]:
                j = i
                while j < n and flags[j]:
                    j += 1
                found.append((i, j - i))
                i = j
            else:
                i += 1
        return found

    onsets = [s for s, length in loop_runs([p >= tau_on for p in probs]) if length >= min_onset]
    firm = [(s, length) for s, length in loop_runs([p < tau_off for p in probs]) if length >= min_offset]
    zones, zone_start = [], 0
    for s, length in firm:
        zones.append((zone_start, min(s + min_offset - 1, n)))
        zone_start = s + length
    zones.append((zone_start, n))
    out = np.zeros(n, bool)
    for start, stop in zones:
        first = next((o for o in onsets if o >= start), None)
        if stop > start and first is not None and first < stop:
            out[first:stop] = True
    return out


def test_hysteresis_by_hand():
    p = np.array([0.5, 0.9, 0.8, 0.78, 0.7, 0.8, 0.9, 0.77, 0.79])
    # p == tau_off keeps the event alive; 0.8 after an exit does not restart it.
    assert hysteresis(p, 0.86, 0.78).tolist() == [0, 1, 1, 1, 0, 0, 1, 0, 0]


def test_hysteresis_min_onset_offset_by_hand():
    p = np.array([0.9, 0.5, 0.9, 0.9, 0.8, 0.5, 0.8, 0.9, 0.5, 0.5, 0.5, 0.9])
    # Onset needs 2 high samples (index 2), a 1-sample dip (5) is held, the 3-sample OFF run at 8
    # ends it one sample in (min_offset - 1), and the lone high sample at 11 does not qualify.
    expected = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert hysteresis(p, 0.86, 0.78, min_onset_samples=2, min_offset_samples=2).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(traces, st.sampled_from(LEVELS), st.sampled_from(LEVELS))
def test_hysteresis_matches_state_machine(probs, a, b):
    tau_on, tau_off = max(a, b), min(a, b)
    probs = np.array(probs, np.float64)
    np.testing.assert_array_equal(hysteresis(probs, tau_on, tau_off), state_machine(probs, tau_on, tau_off))


@settings(max_examples=300, deadline=None)
@given(traces, st.integers(1, 5), st.integers(1, 5))
def test_hysteresis_matches_zone_reading_of_the_original(probs, min_onset, min_offset):
    probs = np.array(probs, np.float64)
    got = hysteresis(probs, 0.86, 0.78, min_onset, min_offset)
    np.testing.assert_array_equal(got, zone_hysteresis(probs, 0.86, 0.78, min_onset, min_offset))


def test_hysteresis_rejects_bad_input():
    with pytest.raises(ValueError, match="must not exceed"):
        hysteresis(np.zeros(3), 0.5, 0.6)
    with pytest.raises(ValueError, match="1 of 3 probabilities are not finite"):
        hysteresis(np.array([0.1, np.nan, 0.2]), 0.86, 0.78)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hysteresis(np.array([-2.0, 3.0]), 0.86, 0.78)  # logits
    assert hysteresis(np.zeros(0), 0.86, 0.78).shape == (0,)


# ----------------------------------------------------------------------------------------------
# morphology


def scipy_morphology(mask, opening, closing):
    """Reference: erosion with out-of-range samples read True, dilation with them read False."""
    o, c = np.ones(opening, bool), np.ones(closing, bool)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(mask, o, border_value=1), o, border_value=0)
    return ndimage.binary_erosion(ndimage.binary_dilation(opened, c, border_value=0), c, border_value=1)


def test_morphology_by_hand():
    mask = spans(20, (0, 1), (3, 5), (7, 10), (14, 17), (18, 20))
    # Opening 3 drops the interior pair 3-4 and the single sample at the start edge (an edge run
    # needs 3 // 2 + 1 = 2 samples) but keeps the pair at the end edge; closing 3 fills only
    # gaps < 3 samples: 17, not 10-13.
    assert np.flatnonzero(morphology(mask, 3, 3)).tolist() == [7, 8, 9, 14, 15, 16, 17, 18, 19]
    # Closing 5 fills interior gaps < 5 (10-13) and edge gaps <= 2, not the 7-sample lead.
    assert np.flatnonzero(morphology(mask, 3, 5)).tolist() == list(range(7, 20))
    lead = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
    assert morphology(lead, 1, 5).tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert morphology(mask, 1, 1).tolist() == mask.tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=60),
    st.sampled_from([1, 3, 5, 7, 11]),
    st.sampled_from([1, 3, 5, 9, 31]),
)
def test_morphology_matches_scipy(mask, opening, closing):
    mask = np.array(mask, bool)
    np.testing.assert_array_equal(morphology(mask, opening, closing), scipy_morphology(mask, opening, closing))


def test_morphology_rejects_even_elements():
    with pytest.raises(ValueError, match="postprocess.closing_samples must be an odd number"):
        morphology(np.zeros(5, bool), 3, 4)


# ----------------------------------------------------------------------------------------------
# runs, merge, duration, events (sfreq 4 Hz: one sample is 0.25 s)


def test_runs_and_spans_round_trip():
    mask = spans(12, (0, 2), (5, 6), (9, 12))
    starts, stops = runs(mask)
    assert starts.tolist() == [0, 5, 9] and stops.tolist() == [2, 6, 12]
    np.testing.assert_array_equal(spans_to_mask(starts, stops, 12), mask)
    assert spans_to_mask(np.array([1, 3]), np.array([4, 6]), 8).tolist() == [0, 1, 1, 1, 1, 1, 0, 0]


# Runs [2, 6) 1 s, [10, 14) 1 s, [22, 30) 2 s, [36, 40) 1 s; gaps 1 s, 2 s, 1.5 s between them.
MASK = spans(40, (2, 6), (10, 14), (22, 30), (36, 40))


@pytest.mark.parametrize(
    ("gap_seconds", "expected"),
    [
        (0.75, [(2, 6), (10, 14), (22, 30), (36, 40)]),
        (1.0, [(2, 14), (22, 30), (36, 40)]),  # inclusive
        (1.5, [(2, 14), (22, 40)]),
        (2.0, [(2, 40)]),  # the 0.5 s lead gap touches the start and stays
    ],
)
def test_merge_gaps(gap_seconds, expected):
    starts, stops = runs(merge_gaps(MASK, 4.0, gap_seconds))
    assert list(zip(starts.tolist(), stops.tolist(), strict=True)) == expected


@pytest.mark.parametrize(
    ("min_seconds", "max_seconds", "expected"),
    [
        (1.0, 2.0, [2, 10, 22, 36]),  # both bounds inclusive
        (1.25, 2.0, [22]),
        (1.0, 1.75, [2, 10, 36]),
        (2.25, 600.0, []),
    ],
)
def test_filter_duration(min_seconds, max_seconds, expected):
    starts, _ = runs(filter_duration(MASK, 4.0, min_seconds, max_seconds))
    assert starts.tolist() == expected


def test_events_from_mask_in_seconds_with_confidence():
    probs = np.zeros(40)
    probs[2:6] = [0.5, 0.75, 1.0, 0.25]
    probs[22:30] = 0.875
    probs[36:40] = [0.125, 0.5, 0.25, 0.375]  # a run ending at the last sample
    mask = spans(40, (2, 6), (22, 30), (36, 40))
    assert events_from_mask(mask, 4.0, probs, "mean") == [
        Event(0.5, 1.5, "seiz", "TERM", 0.625),
        Event(5.5, 7.5, "seiz", "TERM", 0.875),
        Event(9.0, 10.0, "seiz", "TERM", 0.3125),
    ]
    assert [e.confidence for e in events_from_mask(mask, 4.0, probs, "peak")] == [1.0, 0.875, 0.5]
    assert [e.confidence for e in events_from_mask(mask, 4.0)] == [1.0, 1.0, 1.0]
    assert events_from_mask(np.zeros(40, bool), 4.0, probs) == []
    with pytest.raises(ValueError, match="'mean' or 'peak'"):
        events_from_mask(mask, 4.0, probs, "max")


# ----------------------------------------------------------------------------------------------
# the pipeline


def test_postprocess_end_to_end():
    sfreq = 4.0
    p = np.full(160, 0.1)
    p[5:15] = 0.9  # fragment A, 2.5 s
    p[15:19] = 0.2  # 1 s dip: merged
    p[19:29] = 0.9  # fragment B, 2.5 s
    p[40:42] = 0.95  # 2-sample blip: opened away
    p[50:66] = 0.9
    p[55] = 0.3  # 1-sample dip: hysteresis breaks, closing mends
    p[72:77] = 0.9
    p[77:100] = 0.7  # held above tau_off
    p[110:160] = 0.9  # 12.5 s, longer than the maximum: two events of 6.25 s (split)
    cfg = PostprocessConfig(
        tau_on=0.8, tau_off=0.6, opening_samples=3, closing_samples=3,
        min_duration_seconds=3.0, max_duration_seconds=10.0, merge_gap_seconds=1.0, confidence="mean",
        long_events="split",
    )
    mask, events = postprocess(p, sfreq, cfg)
    np.testing.assert_array_equal(mask, spans(160, (5, 29), (50, 66), (72, 100), (110, 160)))
    assert [(e.start_seconds, e.stop_seconds) for e in events] == [(1.25, 7.25), (12.5, 16.5), (18.0, 25.0),
                                                                   (27.5, 33.75), (33.75, 40.0)]
    # Confidence spans the merged dip: (20 · 0.9 + 4 · 0.2) / 24.
    assert [e.confidence for e in events] == pytest.approx([18.8 / 24, 13.8 / 16, 20.6 / 28, 0.9, 0.9], abs=1e-12)
    # The original's order (duration filter before merge) would have deleted both fragments.
    opened = morphology(hysteresis(p, 0.8, 0.6), 3, 3)
    assert not filter_duration(opened, sfreq, 3.0, 10.0)[5:29].any()


def test_an_event_longer_than_the_maximum_is_split_kept_or_dropped_as_long_events_says():
    """A review's: a run over max_duration_seconds was dropped in silence, so a 700 s seizure
    detected throughout gave no event, and a second detection merged onto a first (the two past
    the maximum) deleted both. Dropped still by default (config.py: the sweep's recording-long
    events), but named (dropped_long_runs); split into equal events, or kept whole as the
    original did (spec §4.3), when asked."""
    sfreq = 2.0
    p = np.full(2000, 0.1)
    p[200:500] = 0.95  # 150 s
    p[503:705] = 0.95  # 101 s, 1.5 s after it: merged, 252.5 s in all
    base = dict(tau_on=0.9, tau_off=0.8, opening_samples=1, closing_samples=1, min_duration_seconds=3.0,
                max_duration_seconds=200.0, merge_gap_seconds=2.0)
    seconds = {mode: [(e.start_seconds, e.stop_seconds) for e in postprocess(p, sfreq, PostprocessConfig(
        **base, long_events=mode))[1]] for mode in ("split", "keep", "drop")}
    assert seconds["split"] == [(100.0, 226.0), (226.0, 352.5)]  # 505 samples in 2 pieces: 252, 253
    assert seconds["keep"] == [(100.0, 352.5)]
    assert seconds["drop"] == []
    assert dropped_long_runs(p, sfreq, PostprocessConfig(**base)) == [(100.0, 352.5)]  # drop, the default
    assert dropped_long_runs(p, sfreq, PostprocessConfig(**base, long_events="split")) == []
    assert dropped_note([(100.0, 352.5)], 200.0) == ("; 1 detection longer than 200 s dropped (100.0–352.5 s): "
                                                     "--set postprocess.long_events=split reports them")
    assert dropped_note([], 200.0) == ""
    first_alone = np.where(np.arange(2000) < 500, p, 0.1)
    assert [(e.start_seconds, e.stop_seconds) for e in postprocess(first_alone, sfreq, PostprocessConfig(
        **base, long_events="drop"))[1]] == [(100.0, 250.0)]  # under drop, detecting more reported less
    starts, stops = event_spans(spans(2000, (200, 1005)), sfreq, PostprocessConfig(**base, long_events="split"))
    assert list(zip(starts.tolist(), stops.tolist(), strict=True)) == [(200, 468), (468, 736), (736, 1005)]


@pytest.mark.parametrize(("length", "maximum", "pieces"), [(10, 10, [10]), (11, 10, [5, 6]), (30, 10, [10, 10, 10]),
                                                            (31, 10, [7, 8, 8, 8]), (1, 10, [1])])
def test_split_long_runs_cuts_equal_adjacent_pieces_none_longer_than_the_maximum(length, maximum, pieces):
    starts, stops = split_long_runs(np.array([5]), np.array([5 + length]), maximum)
    assert (stops - starts).tolist() == pieces and starts[0] == 5 and stops[-1] == 5 + length
    assert (starts[1:] == stops[:-1]).all()
