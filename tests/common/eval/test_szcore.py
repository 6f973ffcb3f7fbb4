import math

import numpy as np
import pytest
from timescoring.scoring import EventScoring

from common.data.csv_bi import CsvBi, Event
from common.eval.szcore import (
    SZCORE_METRICS,
    SZCORE_PARAMETERS,
    Counts,
    parameters,
    score_record,
    score_szcore,
    seizure_mask,
)

HOUR = 3600.0


def record(spans, duration=HOUR, name="p1_s001_t000.csv_bi", label="seiz"):
    return CsvBi(name, duration, tuple(Event(a, b, label) for a, b in spans))


def counts(ref_spans, hyp_spans, duration=HOUR):
    c = score_record(record(ref_spans, duration), record(hyp_spans, duration))
    return c.tp, c.fp, c.ref_events


def test_parameters_are_szcores_under_timescorings_names():
    assert set(SZCORE_PARAMETERS) == set(vars(EventScoring.Parameters()))
    assert vars(parameters()) == {"toleranceStart": 30, "toleranceEnd": 60, "minOverlap": 0,
                                  "maxEventDuration": 300, "minDurationBetweenEvents": 90}


def test_tolerance_after_onset_is_60_seconds_past_the_end():
    assert counts([(100, 110)], [(169, 175)]) == (1, 0, 1)  # inside [70, 170)
    assert counts([(100, 110)], [(170, 175)]) == (0, 1, 1)  # starts where the tolerance ends


def test_tolerance_before_onset_is_30_seconds():
    assert counts([(100, 110)], [(60, 71)]) == (1, 0, 1)
    assert counts([(100, 110)], [(60, 70)]) == (0, 1, 1)
    assert counts([(10, 20)], [(0, 1)]) == (1, 0, 1)  # the extension is clipped at 0


def test_events_closer_than_90_seconds_merge():
    assert counts([(100, 110), (199, 210)], []) == (0, 0, 1)  # gap 89 s
    assert counts([(100, 110), (200, 210)], []) == (0, 0, 2)  # gap 90 s
    assert counts([], [(1000, 1010), (1099, 1110)]) == (0, 1, 0)  # two detections, one false alarm
    assert counts([], [(1000, 1010), (1100, 1110)]) == (0, 2, 0)


def test_events_longer_than_300_seconds_split():
    assert counts([(100, 400)], []) == (0, 0, 1)
    assert counts([(100, 401)], []) == (0, 0, 2)
    assert counts([(100, 750)], []) == (0, 0, 3)  # 300 + 300 + 50
    # a detection near the start of a long seizure finds only its first piece
    assert counts([(100, 750)], [(100, 110)]) == (1, 0, 3)


def test_one_hz_mask_floors_both_ends():
    mask = seizure_mask(record([(100.9, 110.2)], duration=200.7))
    assert mask.size == 200 and np.flatnonzero(mask).tolist() == list(range(100, 110))
    assert not seizure_mask(record([(5.2, 5.9)], duration=10)).any()  # under one second: gone
    assert seizure_mask(record([(0, 10)], duration=10, label="bckg")).sum() == 0


def test_bad_records_are_errors():
    with pytest.raises(ValueError, match="neither 'seiz' nor 'bckg'"):
        seizure_mask(record([(1, 2)], label="fnsz"))
    with pytest.raises(ValueError, match="under one 1 Hz sample"):
        seizure_mask(record([], duration=0.5))
    with pytest.raises(ValueError, match="durations differ"):
        score_record(record([], 100), record([], 101))


def test_subject_sums_then_mean_over_subjects():
    pairs = [
        # subject a: 2 records -> tp 1 of 2 ref events, fp 1, 2 h
        (record([(100, 110)], name="a_s001_t000.csv_bi"), record([(105, 106)], name="a_s001_t000.csv_bi")),
        (record([(100, 110)], name="a_s002_t000.csv_bi"), record([(2000, 2010)], name="a_s002_t000.csv_bi")),
        # subject b: no seizure, one false alarm in 1 h: sensitivity undefined, precision and f1 0
        (record([], name="b_s001_t000.csv_bi"), record([(500, 510)], name="b_s001_t000.csv_bi")),
        # subject c: no seizure, no detection: only the false-alarm rate is defined
        (record([], name="c_s001_t000.csv_bi"), record([], name="c_s001_t000.csv_bi")),
    ]
    result = score_szcore(pairs)
    assert result.per_subject == {"a": Counts(1, 1, 2, 2 * HOUR), "b": Counts(0, 1, 0, HOUR),
                                  "c": Counts(0, 0, 0, HOUR)}
    assert result.per_record["a_s002_t000.csv_bi"] == Counts(0, 1, 1, HOUR)
    a, b, c = (result.per_subject[s].metrics() for s in "abc")
    assert a == {"sensitivity": 0.5, "precision": 0.5, "f1": 0.5, "fp_per_24h": 12.0}
    assert math.isnan(b["sensitivity"]) and b["precision"] == 0 and b["f1"] == 0 and b["fp_per_24h"] == 24
    assert all(math.isnan(c[k]) for k in ("sensitivity", "precision", "f1")) and c["fp_per_24h"] == 0
    assert tuple(result.mean) == SZCORE_METRICS and tuple(result.std) == SZCORE_METRICS
    assert result.mean["sensitivity"] == 0.5 and result.std["sensitivity"] == 0  # a only
    assert result.mean["precision"] == 0.25 and result.std["precision"] == 0.25  # a, b
    assert result.mean["f1"] == 0.25
    assert result.mean["fp_per_24h"] == 12.0 and result.std["fp_per_24h"] == pytest.approx(np.std([12, 24, 0]))


def test_subjects_can_be_named_otherwise():
    pairs = [(record([], name=f"{n}.csv_bi"), record([], name=f"{n}.csv_bi")) for n in ("x-1", "x-2", "y-1")]
    result = score_szcore(pairs, subject_of=lambda stem: stem.split("-")[0])
    assert sorted(result.per_subject) == ["x", "y"]
    assert all(math.isnan(result.mean[k]) for k in ("sensitivity", "precision", "f1"))
